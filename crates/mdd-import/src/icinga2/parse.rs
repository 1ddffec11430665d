//! The Icinga 2 configuration language, as far as the import reads it: objects and templates
//! with their attribute assignments and imports, apply rules with `assign where`/`ignore where`
//! and `for` loops, constants, includes; expressions with literals, arrays, dictionaries,
//! member access, indexing, calls and the usual operators. Functions (`{{ … }}`) are kept as
//! opaque text; statements the import does not evaluate (`if`, `var`, `for` in a body) are
//! kept as what they are and where, so that they can be reported.

use crate::nagios::ParseError;

#[derive(Debug, Clone, PartialEq)]
pub enum Token {
    Ident(String),
    Str(String),
    Num(f64),
    Lambda(String),
    Punct(&'static str),
    Newline,
}

const PUNCTS: &[&str] = &[
    "+=", "-=", "*=", "/=", "==", "!=", "&&", "||", "<=", ">=", "=>", "{", "}", "[", "]", "(", ")",
    ",", ";", "=", ".", "!", "<", ">", "+", "-", "*", "/", "%", "&", "|", "^", "~", ":", "?",
];

/// Tokens with the line and column of each.
pub fn lex(file: &str, text: &str) -> Result<Vec<(Token, usize, usize)>, ParseError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let (mut i, mut line, mut line_start) = (0usize, 1usize, 0usize);
    let err = |line: usize, column: usize, message: String| ParseError {
        file: file.to_string(),
        line,
        column,
        message,
    };
    while i < chars.len() {
        let c = chars[i];
        let column = i - line_start + 1;
        let starts = |s: &str| chars[i..].iter().take(s.len()).copied().eq(s.chars());
        if c == '\n' {
            tokens.push((Token::Newline, line, column));
            line += 1;
            i += 1;
            line_start = i;
        } else if c.is_whitespace() {
            i += 1;
        } else if starts("//") || c == '#' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if starts("/*") {
            let (at_line, at_column) = (line, column);
            i += 2;
            loop {
                if i + 1 >= chars.len() {
                    return Err(err(at_line, at_column, "a `/*` comment is never closed".into()));
                }
                if chars[i] == '*' && chars[i + 1] == '/' {
                    i += 2;
                    break;
                }
                if chars[i] == '\n' {
                    line += 1;
                    line_start = i + 1;
                }
                i += 1;
            }
        } else if starts("{{{") {
            let (at_line, at_column) = (line, column);
            i += 3;
            let mut s = String::new();
            loop {
                if i + 3 > chars.len() {
                    return Err(err(at_line, at_column, "a `{{{` string is never closed".into()));
                }
                if chars[i..].iter().take(3).copied().eq("}}}".chars()) {
                    i += 3;
                    break;
                }
                if chars[i] == '\n' {
                    line += 1;
                    line_start = i + 1;
                }
                s.push(chars[i]);
                i += 1;
            }
            tokens.push((Token::Str(s), at_line, at_column));
        } else if starts("{{") {
            let (at_line, at_column) = (line, column);
            i += 2;
            let mut depth = 0i32;
            let mut s = String::new();
            let mut in_string = false;
            loop {
                if i >= chars.len() {
                    return Err(err(at_line, at_column, "a `{{` function is never closed with `}}`".into()));
                }
                let c = chars[i];
                if c == '\n' {
                    line += 1;
                    line_start = i + 1;
                }
                if in_string {
                    if c == '\\' && i + 1 < chars.len() {
                        s.push(c);
                        s.push(chars[i + 1]);
                        i += 2;
                        continue;
                    }
                    if c == '"' {
                        in_string = false;
                    }
                } else if c == '"' {
                    in_string = true;
                } else if c == '{' {
                    depth += 1;
                } else if c == '}' {
                    if depth == 0 && chars.get(i + 1) == Some(&'}') {
                        i += 2;
                        break;
                    }
                    depth -= 1;
                }
                s.push(c);
                i += 1;
            }
            tokens.push((Token::Lambda(s.trim().to_string()), at_line, at_column));
        } else if c == '"' {
            let (at_line, at_column) = (line, column);
            i += 1;
            let mut s = String::new();
            loop {
                let Some(&c) = chars.get(i) else {
                    return Err(err(at_line, at_column, "a string is never closed with `\"`".into()));
                };
                match c {
                    '"' => {
                        i += 1;
                        break;
                    }
                    '\n' => {
                        return Err(err(at_line, at_column, "a string runs past the end of its line (a `\"` is missing)".into()));
                    }
                    '\\' => {
                        let escaped = chars.get(i + 1).copied().unwrap_or('\\');
                        s.push(match escaped {
                            'n' => '\n',
                            't' => '\t',
                            'r' => '\r',
                            other => other,
                        });
                        i += 2;
                    }
                    c => {
                        s.push(c);
                        i += 1;
                    }
                }
            }
            tokens.push((Token::Str(s), at_line, at_column));
        } else if c.is_ascii_digit() {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                i += 1;
            }
            let number: String = chars[start..i].iter().collect();
            let mut value: f64 = number
                .parse()
                .map_err(|_| err(line, column, format!("`{number}` is not a number")))?;
            // Durations: 30s, 1m, 2h, 1d, 500ms.
            let unit_start = i;
            while i < chars.len() && chars[i].is_ascii_alphabetic() {
                i += 1;
            }
            let unit: String = chars[unit_start..i].iter().collect();
            value *= match unit.as_str() {
                "" | "s" => 1.0,
                "ms" => 0.001,
                "m" => 60.0,
                "h" => 3600.0,
                "d" => 86400.0,
                other => {
                    return Err(err(line, column, format!("`{number}{other}` is not a number or a duration")));
                }
            };
            tokens.push((Token::Num(value), line, column));
        } else if c.is_alphabetic() || c == '_' || c == '@' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_' || chars[i] == '@') {
                i += 1;
            }
            tokens.push((Token::Ident(chars[start..i].iter().collect()), line, column));
        } else if c == '<'
            && tokens
                .last()
                .is_some_and(|(t, _, _)| matches!(t, Token::Ident(w) if w == "include" || w == "include_recursive"))
        {
            // `include <itl>`: a name in the system include directory.
            let start = i + 1;
            while i < chars.len() && chars[i] != '>' && chars[i] != '\n' {
                i += 1;
            }
            let name: String = chars[start..i.min(chars.len())].iter().collect();
            i += 1;
            tokens.push((Token::Str(format!("<{name}>")), line, column));
        } else if let Some(p) = PUNCTS.iter().find(|p| starts(p)) {
            tokens.push((Token::Punct(p), line, column));
            i += p.len();
        } else {
            return Err(err(line, column, format!("unexpected `{c}`")));
        }
    }
    Ok(tokens)
}

/// One step of an assignment's target: `vars`, `.os`, `["http"]`.
#[derive(Debug, Clone, PartialEq)]
pub enum Segment {
    Name(String),
    Index(Expr),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Null,
    Bool(bool),
    Num(f64),
    Str(String),
    Ident(String),
    Array(Vec<Expr>),
    Dict(Vec<Stmt>),
    Lambda(String),
    Member(Box<Expr>, String),
    Index(Box<Expr>, Box<Expr>),
    Call(Box<Expr>, Vec<Expr>),
    Unary(&'static str, Box<Expr>),
    Binary(&'static str, Box<Expr>, Box<Expr>),
    Ternary(Box<Expr>, Box<Expr>, Box<Expr>),
}

/// A statement of a function's body (`{{ … }}`).
#[derive(Debug, Clone, PartialEq)]
pub enum FnStmt {
    Var(String, Expr),
    If(Expr, Vec<FnStmt>, Vec<FnStmt>),
    Return(Expr),
    Expr(Expr),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Stmt {
    Assign {
        target: Vec<Segment>,
        op: &'static str,
        value: Expr,
        line: usize,
    },
    Import(Expr, usize),
    AssignWhere(Expr, usize),
    IgnoreWhere(Expr, usize),
    /// A statement the import does not evaluate: what it is, and where.
    Other(String, usize),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Top {
    Object {
        template: bool,
        kind: String,
        name: Expr,
        body: Vec<Stmt>,
        line: usize,
    },
    Apply {
        kind: String,
        name: Option<Expr>,
        /// `to Host` / `to Service`.
        to: Option<String>,
        /// `for (key => value in expr)` or `for (value in expr)`.
        for_loop: Option<(String, Option<String>, Expr)>,
        body: Vec<Stmt>,
        line: usize,
    },
    Const(String, Expr, usize),
    Include {
        kind: IncludeKind,
        path: String,
        line: usize,
    },
    Other(String, usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IncludeKind {
    /// `include "file"` (a `*` in its last part is a pattern) or `include <name>`.
    File,
    /// `include_recursive "dir"`: every `.conf` under it.
    Recursive,
}

struct Parser<'a> {
    file: &'a str,
    tokens: Vec<(Token, usize, usize)>,
    at: usize,
    /// Inside brackets, newlines do not end anything.
    nesting: usize,
    /// How deep expressions nest, bounded so that no input can exhaust the stack.
    depth: usize,
}

/// Deeper than this, an expression is refused.
const MAX_DEPTH: usize = 64;

/// The top-level statements of one file.
pub fn parse(file: &str, text: &str) -> Result<Vec<Top>, ParseError> {
    let tokens = lex(file, text)?;
    let mut parser = Parser {
        file,
        tokens,
        at: 0,
        nesting: 0,
        depth: 0,
    };
    let mut tops = Vec::new();
    loop {
        parser.skip_separators();
        if parser.peek().is_none() {
            break;
        }
        tops.push(parser.top()?);
    }
    Ok(tops)
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at).map(|(t, _, _)| t)
    }

    fn position(&self) -> (usize, usize) {
        self.tokens
            .get(self.at)
            .or_else(|| self.tokens.last())
            .map_or((1, 1), |(_, l, c)| (*l, *c))
    }

    fn error(&self, message: impl Into<String>) -> ParseError {
        let (line, column) = self.position();
        ParseError {
            file: self.file.to_string(),
            line,
            column,
            message: message.into(),
        }
    }

    fn next(&mut self) -> Option<Token> {
        let token = self.tokens.get(self.at).map(|(t, _, _)| t.clone());
        self.at += 1;
        token
    }

    fn skip_newlines(&mut self) {
        while self.peek() == Some(&Token::Newline) {
            self.at += 1;
        }
    }

    fn skip_separators(&mut self) {
        // A dictionary's entries may be separated by commas too.
        while matches!(
            self.peek(),
            Some(Token::Newline) | Some(Token::Punct(";")) | Some(Token::Punct(","))
        ) {
            self.at += 1;
        }
    }

    fn is_punct(&self, p: &str) -> bool {
        matches!(self.peek(), Some(Token::Punct(q)) if *q == p)
    }

    fn is_word(&self, w: &str) -> bool {
        matches!(self.peek(), Some(Token::Ident(q)) if q == w)
    }

    fn expect_punct(&mut self, p: &str) -> Result<(), ParseError> {
        if self.nesting > 0 {
            self.skip_newlines();
        }
        if self.is_punct(p) {
            self.at += 1;
            Ok(())
        } else {
            Err(self.error(format!("expected `{p}`, found {}", self.describe())))
        }
    }

    fn describe(&self) -> String {
        match self.peek() {
            None => "the end of the file".into(),
            Some(Token::Newline) => "the end of the line".into(),
            Some(Token::Ident(w)) => format!("`{w}`"),
            Some(Token::Str(s)) => format!("\"{}\"", s.chars().take(40).collect::<String>()),
            Some(Token::Num(n)) => format!("`{n}`"),
            Some(Token::Lambda(_)) => "a `{{ … }}` function".into(),
            Some(Token::Punct(p)) => format!("`{p}`"),
        }
    }

    fn ident(&mut self) -> Result<String, ParseError> {
        match self.next() {
            Some(Token::Ident(w)) => Ok(w),
            _ => {
                self.at -= 1;
                Err(self.error(format!("expected a name, found {}", self.describe())))
            }
        }
    }

    fn top(&mut self) -> Result<Top, ParseError> {
        let (line, _) = self.position();
        let Some(Token::Ident(word)) = self.peek().cloned() else {
            return Err(self.error(format!(
                "expected `object`, `template`, `apply`, `const` or `include`, found {}",
                self.describe()
            )));
        };
        match word.as_str() {
            "object" | "template" => {
                self.at += 1;
                let kind = self.ident()?;
                let name = self.primary()?;
                // `ignore_on_error`, `default` and the like before the body.
                while let Some(Token::Ident(_)) = self.peek() {
                    self.at += 1;
                }
                let body = self.block()?;
                Ok(Top::Object {
                    template: word == "template",
                    kind,
                    name,
                    body,
                    line,
                })
            }
            "apply" => {
                self.at += 1;
                let kind = self.ident()?;
                let mut name = None;
                let mut to = None;
                let mut for_loop = None;
                loop {
                    if self.is_word("to") {
                        self.at += 1;
                        to = Some(self.ident()?);
                    } else if self.is_word("for") {
                        self.at += 1;
                        self.expect_punct("(")?;
                        self.nesting += 1;
                        let first = self.ident()?;
                        let (key, value) = if self.is_punct("=>") {
                            self.at += 1;
                            (first, Some(self.ident()?))
                        } else {
                            (first, None)
                        };
                        if !self.is_word("in") {
                            return Err(self.error("expected `in` in the `for` of an apply rule"));
                        }
                        self.at += 1;
                        let over = self.expr()?;
                        self.nesting -= 1;
                        self.expect_punct(")")?;
                        for_loop = Some((key, value, over));
                    } else if self.is_punct("{") {
                        break;
                    } else if name.is_none() {
                        name = Some(self.primary()?);
                    } else {
                        return Err(self.error(format!(
                            "expected `to`, `for` or `{{` in an apply rule, found {}",
                            self.describe()
                        )));
                    }
                }
                let body = self.block()?;
                Ok(Top::Apply {
                    kind,
                    name,
                    to,
                    for_loop,
                    body,
                    line,
                })
            }
            "const" => {
                self.at += 1;
                let name = self.ident()?;
                self.expect_punct("=")?;
                let value = self.expr()?;
                Ok(Top::Const(name, value, line))
            }
            "include" | "include_recursive" => {
                self.at += 1;
                let path = match self.next() {
                    Some(Token::Str(s)) => s,
                    _ => {
                        self.at -= 1;
                        return Err(self.error("expected a file name after `include`"));
                    }
                };
                // `include_recursive "dir" "pattern"`: the pattern is read and ignored.
                if let Some(Token::Str(_)) = self.peek() {
                    self.at += 1;
                }
                Ok(Top::Include {
                    kind: if word == "include" {
                        IncludeKind::File
                    } else {
                        IncludeKind::Recursive
                    },
                    path,
                    line,
                })
            }
            _ => {
                // Anything else (`globals.x = …`, `if`, `function`, `object` built by code):
                // skipped to the end of its statement, and reported.
                let what = self.skip_statement();
                Ok(Top::Other(what, line))
            }
        }
    }

    /// Skips one statement (its brackets balanced), returning its first words.
    fn skip_statement(&mut self) -> String {
        let mut words = Vec::new();
        let mut depth = 0usize;
        while let Some(token) = self.peek().cloned() {
            match token {
                Token::Punct("{") | Token::Punct("(") | Token::Punct("[") => depth += 1,
                Token::Punct("}") | Token::Punct(")") | Token::Punct("]") => {
                    if depth == 0 {
                        break;
                    }
                    depth -= 1;
                    if depth == 0 && token == Token::Punct("}") {
                        self.at += 1;
                        // `if (…) { … } else { … }` goes on.
                        if !self.is_word("else") {
                            break;
                        }
                        continue;
                    }
                }
                Token::Newline | Token::Punct(";") if depth == 0 => break,
                Token::Ident(ref w) if words.len() < 3 => words.push(w.clone()),
                _ => {}
            }
            self.at += 1;
        }
        words.join(" ")
    }

    fn block(&mut self) -> Result<Vec<Stmt>, ParseError> {
        self.skip_newlines();
        self.expect_punct("{")?;
        let saved = self.nesting;
        self.nesting = 0;
        let mut body = Vec::new();
        loop {
            self.skip_separators();
            if self.is_punct("}") {
                self.at += 1;
                break;
            }
            if self.peek().is_none() {
                return Err(self.error("a `{` is never closed with `}`"));
            }
            body.push(self.statement()?);
        }
        self.nesting = saved;
        Ok(body)
    }

    fn statement(&mut self) -> Result<Stmt, ParseError> {
        let (line, _) = self.position();
        if self.is_word("import") {
            self.at += 1;
            return Ok(Stmt::Import(self.expr()?, line));
        }
        if self.is_word("assign") || self.is_word("ignore") {
            let assign = self.is_word("assign");
            self.at += 1;
            if !self.is_word("where") {
                return Err(self.error("expected `where`"));
            }
            self.at += 1;
            let condition = self.expr()?;
            return Ok(if assign {
                Stmt::AssignWhere(condition, line)
            } else {
                Stmt::IgnoreWhere(condition, line)
            });
        }
        if [
            "if", "for", "var", "while", "return", "locals", "function", "log", "let",
        ]
        .iter()
        .any(|w| self.is_word(w))
        {
            let what = self.skip_statement();
            return Ok(Stmt::Other(what, line));
        }
        // A target: name(.name | [expr])*, or a string key in a dictionary.
        let mut target = match self.next() {
            Some(Token::Ident(w)) => vec![Segment::Name(w)],
            Some(Token::Str(s)) => vec![Segment::Name(s)],
            _ => {
                self.at -= 1;
                return Err(self.error(format!("expected an attribute, found {}", self.describe())));
            }
        };
        loop {
            if self.is_punct(".") {
                self.at += 1;
                target.push(Segment::Name(self.ident()?));
            } else if self.is_punct("[") {
                self.at += 1;
                self.nesting += 1;
                let index = self.expr()?;
                self.nesting -= 1;
                self.expect_punct("]")?;
                target.push(Segment::Index(index));
            } else {
                break;
            }
        }
        let op = match self.peek() {
            Some(Token::Punct(p)) if matches!(*p, "=" | "+=" | "-=" | "*=" | "/=") => *p,
            _ => {
                return Err(self.error(format!(
                    "expected `=` or `+=` after the attribute, found {}",
                    self.describe()
                )));
            }
        };
        self.at += 1;
        let value = self.expr()?;
        Ok(Stmt::Assign {
            target,
            op,
            value,
            line,
        })
    }

    fn expr(&mut self) -> Result<Expr, ParseError> {
        if self.depth >= MAX_DEPTH {
            return Err(self.error(format!("values nest deeper than {MAX_DEPTH}")));
        }
        self.depth += 1;
        let expr = self.conditional();
        self.depth -= 1;
        expr
    }

    fn conditional(&mut self) -> Result<Expr, ParseError> {
        let condition = self.binary(0)?;
        if self.is_punct("?") {
            self.at += 1;
            let yes = self.expr()?;
            self.expect_punct(":")?;
            let no = self.expr()?;
            return Ok(Expr::Ternary(
                Box::new(condition),
                Box::new(yes),
                Box::new(no),
            ));
        }
        Ok(condition)
    }

    fn function_body(&mut self, until_brace: bool) -> Result<Vec<FnStmt>, ParseError> {
        let mut body = Vec::new();
        loop {
            self.skip_separators();
            if until_brace && self.is_punct("}") {
                self.at += 1;
                return Ok(body);
            }
            if self.peek().is_none() {
                if until_brace {
                    return Err(self.error("a `{` is never closed with `}`"));
                }
                return Ok(body);
            }
            body.push(self.function_statement()?);
        }
    }

    fn function_statement(&mut self) -> Result<FnStmt, ParseError> {
        if self.is_word("var") {
            self.at += 1;
            let name = self.ident()?;
            self.expect_punct("=")?;
            return Ok(FnStmt::Var(name, self.expr()?));
        }
        if self.is_word("return") {
            self.at += 1;
            return Ok(FnStmt::Return(self.expr()?));
        }
        if self.is_word("if") {
            self.at += 1;
            self.expect_punct("(")?;
            self.nesting += 1;
            let condition = self.expr()?;
            self.nesting -= 1;
            self.expect_punct(")")?;
            self.skip_newlines();
            self.expect_punct("{")?;
            let yes = self.function_body(true)?;
            let save = self.at;
            self.skip_newlines();
            let no = if self.is_word("else") {
                self.at += 1;
                self.skip_newlines();
                if self.is_word("if") {
                    vec![self.function_statement()?]
                } else {
                    self.expect_punct("{")?;
                    self.function_body(true)?
                }
            } else {
                self.at = save;
                Vec::new()
            };
            return Ok(FnStmt::If(condition, yes, no));
        }
        if [
            "for", "while", "function", "try", "throw", "break", "continue",
        ]
        .iter()
        .any(|w| self.is_word(w))
        {
            return Err(self.error(format!("{} in a function", self.describe())));
        }
        Ok(FnStmt::Expr(self.expr()?))
    }

    fn binary(&mut self, min: u8) -> Result<Expr, ParseError> {
        let mut left = self.unary()?;
        let mut operators = 0;
        loop {
            if self.nesting > 0 {
                self.skip_newlines();
            }
            let op: &'static str = match self.peek() {
                Some(Token::Punct(p)) => p,
                Some(Token::Ident(w)) if w == "in" => "in",
                _ => break,
            };
            // `!in`
            let (op, width) = if op == "!"
                && matches!(self.tokens.get(self.at + 1), Some((Token::Ident(w), _, _)) if w == "in")
            {
                ("!in", 2)
            } else {
                (op, 1)
            };
            let precedence = match op {
                "||" => 1,
                "&&" => 2,
                "in" | "!in" => 3,
                "==" | "!=" => 4,
                "<" | ">" | "<=" | ">=" => 5,
                "|" | "^" | "&" => 6,
                "+" | "-" => 7,
                "*" | "/" | "%" => 8,
                _ => break,
            };
            if precedence < min {
                break;
            }
            operators += 1;
            if operators > 256 {
                return Err(self.error("an expression with more than 256 operators in a row"));
            }
            self.at += width;
            if self.nesting > 0 {
                self.skip_newlines();
            } else {
                // An operator at the end of a line goes on with the next.
                self.skip_newlines();
            }
            let right = self.binary(precedence + 1)?;
            left = Expr::Binary(op, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Expr, ParseError> {
        // Prefix operators gathered in a loop, not by recursion: `!!!!x` cannot go deep.
        let mut prefixes = Vec::new();
        while self.is_punct("!") || self.is_punct("-") {
            if prefixes.len() >= MAX_DEPTH {
                return Err(self.error(format!("values nest deeper than {MAX_DEPTH}")));
            }
            prefixes.push(if self.is_punct("!") { "!" } else { "-" });
            self.at += 1;
        }
        let mut expr = self.postfix()?;
        for op in prefixes.into_iter().rev() {
            expr = Expr::Unary(op, Box::new(expr));
        }
        Ok(expr)
    }

    fn postfix(&mut self) -> Result<Expr, ParseError> {
        let mut expr = self.primary()?;
        let mut steps = 0;
        loop {
            steps += 1;
            if steps > 256 {
                return Err(self.error("more than 256 `.`, `[…]` or calls in a row"));
            }
            if self.is_punct(".") {
                self.at += 1;
                expr = Expr::Member(Box::new(expr), self.ident()?);
            } else if self.is_punct("[") {
                self.at += 1;
                self.nesting += 1;
                let index = self.expr()?;
                self.nesting -= 1;
                self.expect_punct("]")?;
                expr = Expr::Index(Box::new(expr), Box::new(index));
            } else if self.is_punct("(") {
                self.at += 1;
                self.nesting += 1;
                let mut args = Vec::new();
                loop {
                    self.skip_newlines();
                    if self.is_punct(")") {
                        break;
                    }
                    args.push(self.expr()?);
                    self.skip_newlines();
                    if self.is_punct(",") {
                        self.at += 1;
                    }
                }
                self.nesting -= 1;
                self.expect_punct(")")?;
                expr = Expr::Call(Box::new(expr), args);
            } else {
                break;
            }
        }
        Ok(expr)
    }

    fn primary(&mut self) -> Result<Expr, ParseError> {
        if self.nesting > 0 {
            self.skip_newlines();
        }
        match self.next() {
            Some(Token::Str(s)) => Ok(Expr::Str(s)),
            Some(Token::Num(n)) => Ok(Expr::Num(n)),
            Some(Token::Lambda(l)) => Ok(Expr::Lambda(l)),
            Some(Token::Ident(w)) => Ok(match w.as_str() {
                "true" => Expr::Bool(true),
                "false" => Expr::Bool(false),
                "null" => Expr::Null,
                _ => Expr::Ident(w),
            }),
            Some(Token::Punct("(")) => {
                self.nesting += 1;
                let inner = self.expr()?;
                self.nesting -= 1;
                self.expect_punct(")")?;
                Ok(inner)
            }
            Some(Token::Punct("[")) => {
                self.nesting += 1;
                let mut items = Vec::new();
                loop {
                    self.skip_newlines();
                    if self.is_punct("]") {
                        self.at += 1;
                        break;
                    }
                    items.push(self.expr()?);
                    self.skip_newlines();
                    if self.is_punct(",") {
                        self.at += 1;
                    } else if !self.is_punct("]") {
                        self.nesting -= 1;
                        return Err(self.error(format!(
                            "expected `,` or `]` in a list, found {}",
                            self.describe()
                        )));
                    }
                }
                self.nesting -= 1;
                Ok(Expr::Array(items))
            }
            Some(Token::Punct("{")) => {
                self.at -= 1;
                Ok(Expr::Dict(self.block()?))
            }
            _ => {
                self.at -= 1;
                Err(self.error(format!("expected a value, found {}", self.describe())))
            }
        }
    }
}

/// The body of a function (`{{ … }}`): what the import can evaluate of it, or what it cannot.
pub fn parse_function(text: &str) -> Result<Vec<FnStmt>, String> {
    let tokens = lex("function", text).map_err(|e| e.message)?;
    let mut parser = Parser {
        file: "function",
        tokens,
        at: 0,
        nesting: 0,
        depth: 0,
    };
    parser.function_body(false).map_err(|e| e.message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_apply_rules_and_expressions() {
        let text = r#"
const PluginDir = "/usr/lib/nagios/plugins"
object Host NodeName {
  import "generic-host"
  address = "127.0.0.1"
  vars.http_vhosts["http"] = {
    http_uri = "/"
  }
  check_interval = 1m
}
apply Service for (disk => config in host.vars.disks) {
  vars += config
}
apply Service "ssh" {
  check_command = "ssh"
  assign where (host.address || host.address6) && host.vars.os == "Linux"
  ignore where "x" in host.groups
}
object CheckCommand "ping" {
  command = [ PluginDir + "/check_ping" ]
  arguments = {
    "-H" = {
      value = "$ping_address$"
      set_if = {{ return true }}
    }
  }
}
include <itl>
include_recursive "conf.d"
globals.x = 1
"#;
        let tops = parse("t.conf", text).expect("parses");
        assert_eq!(tops.len(), 8, "{tops:#?}");
        let Top::Object { kind, body, .. } = &tops[1] else {
            panic!("{:?}", tops[1])
        };
        assert_eq!(kind, "Host");
        assert_eq!(body.len(), 4);
        assert!(matches!(&body[3], Stmt::Assign { value: Expr::Num(n), .. } if *n == 60.0));
        let Top::Apply { for_loop, .. } = &tops[2] else {
            panic!()
        };
        assert_eq!(for_loop.as_ref().map(|f| f.0.as_str()), Some("disk"));
        let Top::Apply { body, .. } = &tops[3] else {
            panic!()
        };
        assert!(matches!(
            body[1],
            Stmt::AssignWhere(Expr::Binary("&&", _, _), 16)
        ));
        assert!(matches!(
            body[2],
            Stmt::IgnoreWhere(Expr::Binary("in", _, _), 17)
        ));
        assert!(
            matches!(&tops[5], Top::Include { path, kind: IncludeKind::File, .. } if path == "<itl>")
        );
        assert!(
            matches!(&tops[7], Top::Other(what, 30) if what == "globals x"),
            "{:?}",
            tops[7]
        );
    }

    #[test]
    fn mistakes_name_the_line_and_column() {
        let e = parse("bad.conf", "object Host \"a\" {\n  address = \n}\n").expect_err("no value");
        assert_eq!((e.line, e.column), (2, 13), "{e}");
        let e = parse("bad.conf", "object Host \"a\" {\n  address = \"x\n}\n").expect_err("string");
        assert_eq!((e.line, e.column), (2, 13), "{e}");
        let e = parse("bad.conf", "object Host \"a\" {\n").expect_err("unclosed");
        assert!(e.message.contains("never closed"), "{e}");
        // However deep the input nests, a clear error and no exhausted stack.
        let deep = format!(
            "const X = {}1{}\n",
            "(".repeat(100_000),
            ")".repeat(100_000)
        );
        let e = parse("deep.conf", &deep).expect_err("too deep");
        assert!(e.message.contains("nest deeper than"), "{e}");
        let e = parse("deep.conf", &format!("const X = {}", "[".repeat(100_000)))
            .expect_err("too deep");
        assert!(e.message.contains("nest deeper than"), "{e}");
        let nots = format!("const X = {}true\n", "!".repeat(100_000));
        let e = parse("nots.conf", &nots).expect_err("too deep");
        assert!(e.message.contains("nest deeper than"), "{e}");
        assert!(parse("nots.conf", "const X = !!true\n").is_ok());
        let path = format!("const X = a{}\n", ".b".repeat(100_000));
        assert!(parse("path.conf", &path).is_err());
        let sum = format!("const X = 1{}\n", " + 1".repeat(100_000));
        let e = parse("sum.conf", &sum).expect_err("too long");
        assert!(e.message.contains("more than 256 operators"), "{e}");
    }
}
