//! Counts as English says them: "1 deployment", "2 deployments", "3 entities".

/// `n` and the noun, plural unless `n` is 1. The plural is the regular one (`-s`, `-ies`
/// after a consonant, `-es` after s, x, ch, sh), which covers every noun mdd counts.
pub fn count(n: usize, singular: &str) -> String {
    if n == 1 {
        return format!("1 {singular}");
    }
    format!("{n} {}", plural(singular))
}

fn plural(singular: &str) -> String {
    let vowel_before_y = singular
        .chars()
        .rev()
        .nth(1)
        .is_some_and(|c| "aeiou".contains(c));
    if let Some(stem) = singular.strip_suffix('y')
        && !vowel_before_y
    {
        return format!("{stem}ies");
    }
    if ["s", "x", "ch", "sh"]
        .iter()
        .any(|end| singular.ends_with(end))
    {
        return format!("{singular}es");
    }
    format!("{singular}s")
}

#[cfg(test)]
mod tests {
    use super::count;

    #[test]
    fn counts_read_as_english() {
        assert_eq!(count(1, "deployment"), "1 deployment");
        assert_eq!(count(0, "deployment"), "0 deployments");
        assert_eq!(count(4, "check"), "4 checks");
        assert_eq!(count(2, "entity"), "2 entities");
        assert_eq!(count(2, "key"), "2 keys");
        assert_eq!(count(3, "silence"), "3 silences");
        assert_eq!(count(2, "match"), "2 matches");
        assert_eq!(count(1, "error"), "1 error");
    }
}
