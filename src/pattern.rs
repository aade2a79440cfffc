//! Table patterns for export jobs: `schema.table`, `*` and `?` wildcards, quoted identifiers.
//! Unquoted parts fold to lower case, as SQL identifiers do; quoted parts are literal.

/// One `include`/`exclude` pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TablePattern {
    /// `None` matches a table in any schema.
    schema: Option<Vec<Token>>,
    table: Vec<Token>,
    text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    Literal(char),
    AnyRun,
    AnyOne,
}

impl TablePattern {
    /// Parses `schema.table`, `table`, `"Odd ""Name"""."t*"`.
    ///
    /// # Errors
    /// A message naming the pattern when it is empty, has more than two parts or an open quote.
    pub fn parse(text: &str) -> Result<TablePattern, String> {
        let shown = crate::redact::show(text);
        let mut parts: Vec<Vec<Token>> = vec![Vec::new()];
        let mut chars = text.chars().peekable();
        let mut quoted = false;
        while let Some(c) = chars.next() {
            let current = parts.last_mut().expect("one part");
            match (quoted, c) {
                (false, '"') => quoted = true,
                (true, '"') => {
                    if chars.peek() == Some(&'"') {
                        chars.next();
                        current.push(Token::Literal('"'));
                    } else {
                        quoted = false;
                    }
                }
                (true, c) => current.push(Token::Literal(c)),
                (false, '.') => parts.push(Vec::new()),
                (false, '*') => current.push(Token::AnyRun),
                (false, '?') => current.push(Token::AnyOne),
                (false, c) if c.is_whitespace() => {
                    return Err(format!(
                        "table pattern '{shown}': quote names that contain spaces"
                    ));
                }
                // As the server folds unquoted identifiers: ASCII letters only.
                (false, c) => current.push(Token::Literal(c.to_ascii_lowercase())),
            }
        }
        if quoted {
            return Err(format!("table pattern '{shown}' has an unterminated quote"));
        }
        if parts.iter().any(Vec::is_empty) {
            return Err(format!("table pattern '{shown}' has an empty part"));
        }
        match parts.len() {
            1 => Ok(TablePattern {
                schema: None,
                table: parts.pop().expect("one part"),
                text: text.to_string(),
            }),
            2 => {
                let table = parts.pop().expect("two parts");
                Ok(TablePattern {
                    schema: parts.pop(),
                    table,
                    text: text.to_string(),
                })
            }
            _ => Err(format!(
                "table pattern '{shown}' has {} dot-separated parts; write schema.table (quote names containing dots)",
                parts.len()
            )),
        }
    }

    /// Whether the table `schema.table` (exact catalog names) matches.
    pub fn matches(&self, schema: &str, table: &str) -> bool {
        self.schema.as_ref().is_none_or(|s| glob(s, schema)) && glob(&self.table, table)
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

fn glob(pattern: &[Token], text: &str) -> bool {
    let text: Vec<char> = text.chars().collect();
    // Classic two-pointer wildcard matching with backtracking to the last `*`.
    let (mut p, mut t) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(Token::AnyOne) => {
                p += 1;
                t += 1;
            }
            Some(Token::Literal(c)) if *c == text[t] => {
                p += 1;
                t += 1;
            }
            Some(Token::AnyRun) => {
                star = Some((p, t));
                p += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|tok| *tok == Token::AnyRun)
}

/// A `databases`/`exclude_databases` pattern of a cluster job: a database name as in
/// `pg_database` (case-sensitive, nothing quoted or folded) with `*` and `?` wildcards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabasePattern {
    tokens: Vec<Token>,
    text: String,
}

impl DatabasePattern {
    /// Parses `*`, `app_*`, `Sales 2026`.
    ///
    /// # Errors
    /// A message naming the pattern when it is empty or holds a control character.
    pub fn parse(text: &str) -> Result<DatabasePattern, String> {
        let shown = crate::redact::show(text);
        if text.is_empty() {
            return Err("a database pattern may not be empty".into());
        }
        if text.chars().any(char::is_control) {
            return Err(format!(
                "database pattern '{shown}' holds a control character"
            ));
        }
        let tokens = text
            .chars()
            .map(|c| match c {
                '*' => Token::AnyRun,
                '?' => Token::AnyOne,
                c => Token::Literal(c),
            })
            .collect();
        Ok(DatabasePattern {
            tokens,
            text: text.to_string(),
        })
    }

    /// Whether the database `name` (exact catalog name) matches.
    pub fn matches(&self, name: &str) -> bool {
        glob(&self.tokens, name)
    }

    /// Whether it names one database (no wildcard).
    pub fn is_literal(&self) -> bool {
        self.tokens.iter().all(|t| matches!(t, Token::Literal(_)))
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// Whether a table is selected by `include` (all tables when empty) and not by `exclude`.
pub fn selected(
    include: &[TablePattern],
    exclude: &[TablePattern],
    schema: &str,
    table: &str,
) -> bool {
    (include.is_empty() || include.iter().any(|p| p.matches(schema, table)))
        && !exclude.iter().any(|p| p.matches(schema, table))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, s: &str, t: &str) -> bool {
        TablePattern::parse(p).unwrap().matches(s, t)
    }

    #[test]
    fn wildcards_and_case_folding() {
        assert!(m("public.*", "public", "film"));
        assert!(!m("public.*", "other", "film"));
        assert!(m("Public.Film", "public", "film"));
        assert!(!m("public.film", "public", "Film"));
        assert!(m("film", "any", "film"));
        assert!(m("pay*", "public", "payment_p2022_01"));
        assert!(m("*.payment_p2022_0?", "public", "payment_p2022_07"));
        assert!(!m("*.payment_p2022_0?", "public", "payment_p2022_10"));
        assert!(m("a*b*c", "s", "axxbyyc"));
        assert!(!m("a*b*c", "s", "axxbyy"));
    }

    #[test]
    fn quoted_identifiers_are_literal() {
        assert!(m("\"We;ird \"\"Sch\"\"\".\"T*\"", "We;ird \"Sch\"", "T*"));
        assert!(!m("\"We;ird \"\"Sch\"\"\".\"T*\"", "We;ird \"Sch\"", "Tx"));
        assert!(m("\"My.Schema\".*", "My.Schema", "x"));
        assert!(m("\"café ☕\".*", "café ☕", "x"));
    }

    #[test]
    fn unquoted_names_fold_ascii_letters_only_as_the_server_does() {
        // `CREATE SCHEMA CafÉ` makes the schema `cafÉ` in a UTF-8 database.
        assert!(m("CafÉ.*", "cafÉ", "x"));
        assert!(!m("CafÉ.*", "café", "x"));
    }

    #[test]
    fn malformed_patterns_are_errors() {
        for bad in ["", "a.", ".b", "a.b.c", "\"open", "two words"] {
            assert!(TablePattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn database_patterns_are_exact_but_for_wildcards() {
        let m = |p: &str, name: &str| DatabasePattern::parse(p).unwrap().matches(name);
        assert!(m("*", "app"));
        assert!(m("*", "Odd \"Name\"; x"));
        assert!(m("app_*", "app_eu"));
        assert!(!m("app_*", "App_eu"));
        assert!(m("App", "App"));
        assert!(!m("app", "App"));
        assert!(m("db?", "db1"));
        assert!(!m("db?", "db12"));
        assert!(m("sales.2026", "sales.2026"));
        assert!(DatabasePattern::parse("").is_err());
        assert!(DatabasePattern::parse("a\nb").is_err());
        let literal = |p: &str| DatabasePattern::parse(p).unwrap().is_literal();
        assert!(literal("app") && literal("Odd \"Name\"; x"));
        assert!(!literal("app_*") && !literal("db?"));
    }

    #[test]
    fn include_and_exclude() {
        let inc = vec![TablePattern::parse("public.*").unwrap()];
        let exc = vec![TablePattern::parse("public.log_*").unwrap()];
        assert!(selected(&inc, &exc, "public", "film"));
        assert!(!selected(&inc, &exc, "public", "log_2024"));
        assert!(selected(&[], &exc, "other", "x"));
    }
}
