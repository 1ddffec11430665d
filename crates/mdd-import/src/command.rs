//! A Nagios `check_command` made into the argv mdd runs: the command's `command_line` with its
//! macros filled in (`$ARGn$` from the `!`-separated arguments, `\!` for a literal `!`,
//! `$USERn$` from resource files, `$HOSTNAME$`, `$HOSTADDRESS$`, `$SERVICEDESC$`, custom
//! `$_HOSTX$`/`$_SERVICEX$` variables), then split into words as `/bin/sh` would split it. A
//! line that needs a shell (pipes, redirections, `;`, `&&`, `$(…)`, globs) becomes
//! `[sh, -c, line]`, and says so.

use std::collections::BTreeMap;

/// What the macros of one host and service are.
#[derive(Debug, Default, Clone)]
pub struct Macros {
    /// `$USER1$`… from resource files, by number.
    pub user: BTreeMap<u32, String>,
    pub host_name: String,
    pub host_address: String,
    pub service_description: String,
    /// Custom variables (`_SNMP_COMMUNITY public` on the host is `$_HOSTSNMP_COMMUNITY$`),
    /// names upper-cased without the leading `_`.
    pub host_vars: BTreeMap<String, String>,
    pub service_vars: BTreeMap<String, String>,
}

/// The argv, and whether it had to go through a shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Argv {
    pub argv: Vec<String>,
    pub through_shell: bool,
}

/// Splits `check_command` at unescaped `!`: the command's name, then `$ARG1$`, `$ARG2$`, ….
pub fn split_check_command(check_command: &str) -> (String, Vec<String>) {
    let mut parts = vec![String::new()];
    let mut chars = check_command.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'!') => {
                chars.next();
                if let Some(last) = parts.last_mut() {
                    last.push('!');
                }
            }
            '!' => parts.push(String::new()),
            c => {
                if let Some(last) = parts.last_mut() {
                    last.push(c);
                }
            }
        }
    }
    let name = parts.remove(0).trim().to_string();
    (name, parts)
}

/// `command_line` with every macro it uses filled in; an unknown macro is an error naming it.
pub fn expand(command_line: &str, args: &[String], macros: &Macros) -> Result<String, String> {
    let mut out = String::with_capacity(command_line.len());
    let mut rest = command_line;
    while let Some(start) = rest.find('$') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let Some(end) = after.find('$') else {
            // A lone `$` is the shell's, not a macro.
            out.push_str(&rest[start..]);
            return Ok(out);
        };
        let name = &after[..end];
        if name.is_empty() {
            // `$$` is a literal dollar sign.
            out.push('$');
        } else {
            out.push_str(&value(name, args, macros)?);
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn value(name: &str, args: &[String], macros: &Macros) -> Result<String, String> {
    let number = |prefix: &str| {
        name.strip_prefix(prefix)
            .and_then(|n| n.parse::<u32>().ok())
    };
    if let Some(n) = number("ARG") {
        // An argument not given is empty, as Nagios makes it.
        return Ok(args
            .get(usize::try_from(n).unwrap_or(usize::MAX).saturating_sub(1))
            .cloned()
            .unwrap_or_default());
    }
    if let Some(n) = number("USER") {
        return macros
            .user
            .get(&n)
            .cloned()
            .ok_or_else(|| format!("${name}$ is not set in any resource file"));
    }
    match name {
        "HOSTNAME" => return Ok(macros.host_name.clone()),
        "HOSTADDRESS" => {
            return Ok(if macros.host_address.is_empty() {
                macros.host_name.clone()
            } else {
                macros.host_address.clone()
            });
        }
        "SERVICEDESC" => return Ok(macros.service_description.clone()),
        _ => {}
    }
    let custom = |prefix: &str, vars: &BTreeMap<String, String>| {
        name.strip_prefix(prefix).and_then(|v| vars.get(v).cloned())
    };
    custom("_HOST", &macros.host_vars)
        .or_else(|| custom("_SERVICE", &macros.service_vars))
        .ok_or_else(|| format!("${name}$ cannot be carried over (mdd has no such macro)"))
}

/// Whether `sh` would do more with `line` than split it into words: an operator, a
/// redirection, a glob, a parameter or command substitution (`$HOME`, `${x}`, `$(…)`, a
/// backtick), a `~` or `#` at the start of a word; quotes taken into account as `sh` takes
/// them (nothing is special inside single quotes; `$` and backticks still are in double ones).
fn needs_shell(line: &str) -> bool {
    #[derive(PartialEq)]
    enum Quote {
        None,
        Single,
        Double,
    }
    let chars: Vec<char> = line.chars().collect();
    let mut quote = Quote::None;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied().unwrap_or(' ');
        let expands = c == '$' && (next.is_ascii_alphanumeric() || "_{(@*#?$!-".contains(next));
        match quote {
            Quote::Single => {
                if c == '\'' {
                    quote = Quote::None;
                }
            }
            Quote::Double => match c {
                '\\' => i += 1,
                '"' => quote = Quote::None,
                '`' => return true,
                _ if expands => return true,
                _ => {}
            },
            Quote::None => {
                let word_start = i == 0 || chars[i - 1].is_whitespace();
                match c {
                    '\\' => i += 1,
                    '\'' => quote = Quote::Single,
                    '"' => quote = Quote::Double,
                    '|' | '&' | ';' | '<' | '>' | '(' | ')' | '`' | '*' | '?' | '[' | '\n' => {
                        return true;
                    }
                    '~' | '#' if word_start => return true,
                    _ if expands => return true,
                    _ => {}
                }
            }
        }
        i += 1;
    }
    false
}

/// The words of `line` as `/bin/sh` splits them; `[sh, -c, line]` when it needs a shell.
pub fn argv(line: &str) -> Result<Argv, String> {
    if needs_shell(line) {
        return Ok(Argv {
            argv: vec!["sh".into(), "-c".into(), line.to_string()],
            through_shell: true,
        });
    }
    let words = shlex::split(line).ok_or_else(|| format!("unbalanced quotes in `{line}`"))?;
    if words.is_empty() {
        return Err("the command line is empty".into());
    }
    Ok(Argv {
        argv: words,
        through_shell: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn macros() -> Macros {
        Macros {
            user: [(1, "/usr/lib/nagios/plugins".to_string())].into(),
            host_name: "web1".into(),
            host_address: "10.0.0.7".into(),
            service_description: "HTTP".into(),
            host_vars: [("SNMP_COMMUNITY".to_string(), "public".to_string())].into(),
            service_vars: BTreeMap::new(),
        }
    }

    #[test]
    fn arguments_split_at_unescaped_bangs() {
        let (name, args) = split_check_command("check_http!-u /a\\!b!-w 5");
        assert_eq!(name, "check_http");
        assert_eq!(args, ["-u /a!b", "-w 5"]);
        assert_eq!(
            split_check_command("check_ping"),
            ("check_ping".into(), vec![])
        );
    }

    #[test]
    fn macros_fill_in_and_the_line_splits_as_sh_would() {
        let line = expand(
            "$USER1$/check_http -H $HOSTADDRESS$ -u '$ARG1$' $ARG2$ -C $_HOSTSNMP_COMMUNITY$ $ARG9$",
            &["/health check".to_string(), "-w 5 -c 10".to_string()],
            &macros(),
        )
        .expect("expands");
        assert_eq!(
            line,
            "/usr/lib/nagios/plugins/check_http -H 10.0.0.7 -u '/health check' -w 5 -c 10 -C public "
        );
        let split = argv(&line).expect("splits");
        assert!(!split.through_shell);
        assert_eq!(
            split.argv,
            [
                "/usr/lib/nagios/plugins/check_http",
                "-H",
                "10.0.0.7",
                "-u",
                "/health check",
                "-w",
                "5",
                "-c",
                "10",
                "-C",
                "public"
            ]
        );
    }

    #[test]
    fn what_needs_a_shell_goes_through_one_and_unknown_macros_are_named() {
        let piped = argv("check_foo | grep -q OK && echo done").expect("argv");
        assert!(piped.through_shell);
        assert_eq!(piped.argv[..2], ["sh", "-c"]);
        assert_eq!(
            expand("$USER2$/x", &[], &macros()).expect_err("unknown"),
            "$USER2$ is not set in any resource file"
        );
        assert!(
            expand("x $CONTACTEMAIL$", &[], &macros())
                .expect_err("unknown")
                .contains("$CONTACTEMAIL$")
        );
        assert_eq!(
            expand("echo $$HOME", &[], &macros()).expect("dollar"),
            "echo $HOME"
        );
        assert!(argv("check_x 'unbalanced").is_err());
        // What sh would expand or treat specially goes through sh; quoted, it is just text.
        for line in [
            "ping-github-api.sh $GITHUB_TOKEN",
            "check \"$HOME\"",
            "check ~/x",
            "check `date`",
            "check *.log",
            "check a # comment",
            "check (x)",
        ] {
            assert!(argv(line).expect("argv").through_shell, "{line}");
        }
        for (line, words) in [
            (
                "sensu-processes-check --search '[{\"search_string\": \"nginx\"}]'",
                vec![
                    "sensu-processes-check",
                    "--search",
                    "[{\"search_string\": \"nginx\"}]",
                ],
            ),
            (
                "check '$HOME' 'a|b' x#y 100%",
                vec!["check", "$HOME", "a|b", "x#y", "100%"],
            ),
            ("check \\$HOME", vec!["check", "$HOME"]),
        ] {
            let split = argv(line).expect("argv");
            assert!(!split.through_shell, "{line}");
            assert_eq!(split.argv, words, "{line}");
        }
    }
}
