//! Reading the SQL `pg_dumpall --globals-only` writes: split into statements (quotes, quoted
//! names, comments and psql meta-commands understood) and each one classified by what it is
//! about — a role's creation, attributes, settings, comment, memberships or parameter
//! privileges, a tablespace, a session setting — so a restore of the roles can decide
//! statement by statement (see `roles`).

/// A token of a statement, with its text as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Tok {
    /// A keyword, unquoted name or number.
    Word(String),
    /// A double-quoted name (the text is the name itself, unescaped).
    Quoted(String),
    /// A string literal, as written (quotes and all).
    Literal(String),
    Punct(char),
}

impl Tok {
    fn is(&self, word: &str) -> bool {
        matches!(self, Tok::Word(w) if w.eq_ignore_ascii_case(word))
    }

    /// The name this token spells, when it is one.
    fn name(&self) -> Option<String> {
        match self {
            Tok::Word(w) => Some(w.to_lowercase()),
            Tok::Quoted(q) => Some(q.clone()),
            _ => None,
        }
    }

    /// The token as SQL.
    pub fn sql(&self) -> String {
        match self {
            Tok::Word(w) | Tok::Literal(w) => w.clone(),
            Tok::Quoted(q) => crate::pg::quote_ident(q),
            Tok::Punct(c) => c.to_string(),
        }
    }
}

/// What a statement is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Kind {
    CreateRole {
        role: String,
    },
    /// `ALTER ROLE r WITH ...`: the attribute tokens after `WITH`.
    Attributes {
        role: String,
        attributes: Vec<Tok>,
    },
    /// `ALTER ROLE r SET ...` (or `IN DATABASE ... SET`, `RESET`).
    Setting {
        role: String,
    },
    /// `COMMENT ON ROLE` / `SECURITY LABEL ... ON ROLE`.
    Comment {
        role: String,
    },
    /// `GRANT role TO member ...`, the grantor (`GRANTED BY`) taken off.
    Membership {
        role: String,
        member: String,
    },
    /// `GRANT|REVOKE ... ON PARAMETER ... TO|FROM grantee`.
    Parameter {
        grantee: String,
    },
    /// Anything about a tablespace; `name` for its creation.
    Tablespace {
        created: Option<String>,
    },
    /// `SET ...`: the dump's own session settings.
    Session,
    Other,
}

/// One statement of the globals SQL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Statement {
    pub kind: Kind,
    /// The statement as SQL (without `GRANTED BY` for a membership), no trailing `;`.
    pub tokens: Vec<Tok>,
}

impl Statement {
    pub fn sql(&self) -> String {
        join(&self.tokens)
    }
}

/// Tokens as SQL, separated by spaces.
pub(super) fn join(tokens: &[Tok]) -> String {
    tokens.iter().map(Tok::sql).collect::<Vec<_>>().join(" ")
}

/// Splits and classifies the globals SQL.
///
/// # Errors
/// A message when the SQL ends inside a quote (a truncated or foreign file).
pub(super) fn parse(sql: &str) -> Result<Vec<Statement>, String> {
    Ok(split(sql)?.into_iter().map(classify).collect())
}

fn split(sql: &str) -> Result<Vec<Vec<Tok>>, String> {
    let chars: Vec<char> = sql.chars().collect();
    let mut out = Vec::new();
    let mut current: Vec<Tok> = Vec::new();
    let mut line_start = true;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line_start = true;
            i += 1;
            continue;
        }
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let at_line_start = std::mem::replace(&mut line_start, false);
        let skip_line = (c == '\\' && at_line_start && current.is_empty())
            || (c == '-' && chars.get(i + 1) == Some(&'-'));
        if skip_line {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
            continue;
        }
        match c {
            ';' => {
                if !current.is_empty() {
                    out.push(std::mem::take(&mut current));
                }
                i += 1;
            }
            '\'' => {
                let (lit, next) = literal(&chars, i, false)?;
                current.push(Tok::Literal(lit));
                i = next;
            }
            '"' => {
                let mut name = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err("the SQL ends inside a quoted name".into()),
                        Some('"') if chars.get(i + 1) == Some(&'"') => {
                            name.push('"');
                            i += 2;
                        }
                        Some('"') => {
                            i += 1;
                            break;
                        }
                        Some(ch) => {
                            name.push(*ch);
                            i += 1;
                        }
                    }
                }
                current.push(Tok::Quoted(name));
            }
            c if c.is_alphanumeric() || c == '_' || c == '$' || c == '.' => {
                if (c == 'E' || c == 'e') && chars.get(i + 1) == Some(&'\'') {
                    let (lit, next) = literal(&chars, i + 1, true)?;
                    current.push(Tok::Literal(format!("E{lit}")));
                    i = next;
                    continue;
                }
                let start = i;
                while i < chars.len()
                    && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | '$' | '.'))
                {
                    i += 1;
                }
                current.push(Tok::Word(chars[start..i].iter().collect()));
            }
            c => {
                current.push(Tok::Punct(c));
                i += 1;
            }
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    Ok(out)
}

/// A string literal starting at `chars[at]` (a quote), as written; with `escapes`, backslash
/// escapes (an `E'...'` string). Returns it and the index after it.
fn literal(chars: &[char], at: usize, escapes: bool) -> Result<(String, usize), String> {
    let mut lit = String::from('\'');
    let mut i = at + 1;
    loop {
        match chars.get(i) {
            None => return Err("the SQL ends inside a string".into()),
            Some('\\') if escapes => {
                lit.push('\\');
                if let Some(ch) = chars.get(i + 1) {
                    lit.push(*ch);
                }
                i += 2;
            }
            Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                lit.push_str("''");
                i += 2;
            }
            Some('\'') => {
                lit.push('\'');
                return Ok((lit, i + 1));
            }
            Some(ch) => {
                lit.push(*ch);
                i += 1;
            }
        }
    }
}

fn classify(mut tokens: Vec<Tok>) -> Statement {
    let (kind, grantor_at) = kind_of(&tokens);
    if let Some(at) = grantor_at {
        tokens.truncate(at);
    }
    Statement { kind, tokens }
}

/// What a statement is about, and where its `GRANTED BY` starts (a membership's).
fn kind_of(t: &[Tok]) -> (Kind, Option<usize>) {
    let word = |i: usize, w: &str| t.get(i).is_some_and(|x| x.is(w));
    let name = |i: usize| t.get(i).and_then(Tok::name);
    let position = |w: &str| t.iter().position(|x| x.is(w));
    let kind = if word(0, "SET") {
        Kind::Session
    } else if word(0, "CREATE") && word(1, "ROLE") && t.len() == 3 {
        name(2).map_or(Kind::Other, |role| Kind::CreateRole { role })
    } else if word(0, "ALTER") && word(1, "ROLE") && t.len() > 3 {
        match name(2) {
            Some(role) if word(3, "WITH") => Kind::Attributes {
                role,
                attributes: t[4..].to_vec(),
            },
            Some(role) if word(3, "SET") || word(3, "RESET") || word(3, "IN") => {
                Kind::Setting { role }
            }
            _ => Kind::Other,
        }
    } else if word(0, "CREATE") && word(1, "TABLESPACE") {
        Kind::Tablespace { created: name(2) }
    } else if t.iter().any(|x| x.is("TABLESPACE")) && !word(0, "CREATE") {
        Kind::Tablespace { created: None }
    } else if word(0, "COMMENT") && word(1, "ON") && word(2, "ROLE") {
        name(3).map_or(Kind::Other, |role| Kind::Comment { role })
    } else if word(0, "SECURITY") && word(1, "LABEL") {
        position("ROLE")
            .and_then(|at| name(at + 1))
            .filter(|_| position("ON").is_some())
            .map_or(Kind::Other, |role| Kind::Comment { role })
    } else if (word(0, "GRANT") || word(0, "REVOKE")) && position("PARAMETER").is_some() {
        position(if word(0, "GRANT") { "TO" } else { "FROM" })
            .and_then(|at| name(at + 1))
            .map_or(Kind::Other, |grantee| Kind::Parameter { grantee })
    } else if word(0, "GRANT") && word(2, "TO") && position("ON").is_none() {
        match (name(1), name(3)) {
            (Some(role), Some(member)) => {
                return (Kind::Membership { role, member }, position("GRANTED"));
            }
            _ => Kind::Other,
        }
    } else {
        Kind::Other
    };
    (kind, None)
}

#[cfg(test)]
mod tests;
