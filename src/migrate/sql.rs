//! A small SQL scanner: splits a migration file into statements the way psql does (quotes,
//! dollar quotes, nested comments, `BEGIN ATOMIC` bodies), and maps positions to line:column.

/// One statement of a file: its text (up to and including the `;`, when there is one) and
/// the byte offset in the file where its first token starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement<'a> {
    pub start: usize,
    pub text: &'a str,
}

impl Statement<'_> {
    /// The first word, lowercased (`create`, `begin`, ...), or "" when the statement starts
    /// with something else (a parenthesis, a quoted identifier).
    pub fn first_word(&self) -> String {
        self.text
            .bytes()
            .take_while(|b| is_ident_byte(*b))
            .map(|b| char::from(b.to_ascii_lowercase()))
            .collect()
    }
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_ident_byte(b: u8) -> bool {
    is_ident_start(b) || b.is_ascii_digit() || b == b'$'
}

/// Splits `sql` into statements at top-level semicolons. Semicolons inside string literals,
/// quoted identifiers, dollar-quoted bodies, comments, parentheses, and the `BEGIN ... END`
/// body of a `CREATE [OR REPLACE] FUNCTION|PROCEDURE ... BEGIN ATOMIC` do not split (the
/// same heuristic as psql). Chunks holding only whitespace and comments are dropped.
pub fn split(sql: &str) -> Vec<Statement<'_>> {
    let bytes = sql.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let mut start: Option<usize> = None;
    let mut parens = 0usize;
    let mut begin_depth = 0usize;
    // The statement's first words, to recognise CREATE [OR REPLACE] FUNCTION|PROCEDURE.
    let mut words: Vec<String> = Vec::new();
    while i < bytes.len() {
        let b = bytes[i];
        if b.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        if b == b'-' && bytes.get(i + 1) == Some(&b'-') {
            i = sql[i..].find('\n').map_or(bytes.len(), |n| i + n + 1);
            continue;
        }
        if b == b'/' && bytes.get(i + 1) == Some(&b'*') {
            i = skip_block_comment(bytes, i);
            continue;
        }
        let token_start = i;
        start.get_or_insert(token_start);
        match b {
            b';' if parens == 0 && begin_depth == 0 => {
                let s = start.take().unwrap_or(token_start);
                if s < i {
                    out.push(Statement {
                        start: s,
                        text: &sql[s..=i],
                    });
                }
                words.clear();
                i += 1;
            }
            b'(' => {
                parens += 1;
                i += 1;
            }
            b')' => {
                parens = parens.saturating_sub(1);
                i += 1;
            }
            b'\'' => {
                let escapes = i > 0
                    && matches!(bytes[i - 1], b'e' | b'E')
                    && (i < 2 || !is_ident_byte(bytes[i - 2]));
                i = skip_string(bytes, i, escapes);
            }
            b'"' => i = skip_quoted_ident(bytes, i),
            b'$' => i = skip_dollar(bytes, i),
            _ if is_ident_start(b) => {
                let end = i + bytes[i..].iter().take_while(|c| is_ident_byte(**c)).count();
                let word = sql[i..end].to_ascii_lowercase();
                if words.len() < 4 {
                    words.push(word.clone());
                }
                if parens == 0 && defines_routine(&words) {
                    match word.as_str() {
                        "begin" => begin_depth += 1,
                        "case" if begin_depth > 0 => begin_depth += 1,
                        "end" => begin_depth = begin_depth.saturating_sub(1),
                        _ => {}
                    }
                }
                i = end;
            }
            _ => i += 1,
        }
    }
    if let Some(s) = start {
        out.push(Statement {
            start: s,
            text: sql[s..].trim_end(),
        });
    }
    out
}

fn defines_routine(words: &[String]) -> bool {
    let w = |n: usize| words.get(n).map_or("", String::as_str);
    w(0) == "create"
        && (matches!(w(1), "function" | "procedure")
            || (w(1) == "or" && w(2) == "replace" && matches!(w(3), "function" | "procedure")))
}

/// Returns the index after the comment that starts at `i` (`/*`); comments nest.
fn skip_block_comment(bytes: &[u8], mut i: usize) -> usize {
    let mut depth = 0usize;
    while i < bytes.len() {
        if bytes[i] == b'/' && bytes.get(i + 1) == Some(&b'*') {
            depth += 1;
            i += 2;
        } else if bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    bytes.len()
}

/// Returns the index after the string literal that starts at `i`; `''` is a quote, and with
/// `escapes` (an `E'...'` string) so is `\'`.
fn skip_string(bytes: &[u8], mut i: usize, escapes: bool) -> usize {
    i += 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if escapes => i += 2,
            b'\'' if bytes.get(i + 1) == Some(&b'\'') => i += 2,
            b'\'' => return i + 1,
            _ => i += 1,
        }
    }
    bytes.len()
}

fn skip_quoted_ident(bytes: &[u8], mut i: usize) -> usize {
    i += 1;
    while i < bytes.len() {
        if bytes[i] == b'"' {
            if bytes.get(i + 1) == Some(&b'"') {
                i += 2;
                continue;
            }
            return i + 1;
        }
        i += 1;
    }
    bytes.len()
}

/// At a `$`: skips a dollar-quoted body (`$$...$$`, `$tag$...$tag$`) when one starts here;
/// otherwise (`$1`, a `$` inside an identifier was consumed with it) just the `$`.
fn skip_dollar(bytes: &[u8], i: usize) -> usize {
    let tag_len = bytes[i + 1..]
        .iter()
        .take_while(|c| is_ident_byte(**c) && **c != b'$')
        .count();
    let close = i + 1 + tag_len;
    let tag_ok = tag_len == 0 || !bytes[i + 1].is_ascii_digit();
    if !tag_ok || bytes.get(close) != Some(&b'$') {
        return i + 1;
    }
    let delimiter = &bytes[i..=close];
    let body = close + 1;
    bytes[body..]
        .windows(delimiter.len())
        .position(|w| w == delimiter)
        .map_or(bytes.len(), |p| body + p + delimiter.len())
}

/// The 1-based line and column (in characters) of byte offset `byte` in `text`.
pub fn line_col(text: &str, byte: usize) -> (usize, usize) {
    let mut byte = byte.min(text.len());
    while !text.is_char_boundary(byte) {
        byte -= 1;
    }
    let before = &text[..byte];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |n| n + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// The byte offset in `text` of the server's error position: a 1-based count of characters.
pub fn char_position_to_byte(text: &str, position: u32) -> usize {
    let index = (position as usize).saturating_sub(1);
    text.char_indices()
        .nth(index)
        .map_or(text.len(), |(b, _)| b)
}

/// The first statement that controls the transaction itself (`BEGIN`, `COMMIT`, ...), which
/// would end the transaction the runner wraps the file in.
pub fn transaction_control<'a>(statements: &'a [Statement<'a>]) -> Option<&'a Statement<'a>> {
    statements.iter().find(|s| {
        matches!(
            s.first_word().as_str(),
            "begin" | "start" | "commit" | "end" | "rollback" | "abort"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(sql: &str) -> Vec<&str> {
        split(sql).into_iter().map(|s| s.text).collect()
    }

    #[test]
    fn splits_at_top_level_semicolons_only() {
        let sql = "CREATE TABLE a (x int, y text DEFAULT ';');\n-- a comment; with a semicolon\n\
                   INSERT INTO \"we;ird\" VALUES (E'it\\'s;', 'o''k;');\n/* a /* nested; */ comment */\
                   SELECT $$;$$, $f$ $$; $f$, $1;";
        assert_eq!(
            texts(sql),
            vec![
                "CREATE TABLE a (x int, y text DEFAULT ';');",
                "INSERT INTO \"we;ird\" VALUES (E'it\\'s;', 'o''k;');",
                "SELECT $$;$$, $f$ $$; $f$, $1;",
            ]
        );
    }

    #[test]
    fn keeps_function_bodies_whole() {
        let sql = "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql\nBEGIN ATOMIC\n  \
                   SELECT CASE WHEN true THEN 1 END;\n  SELECT 2;\nEND;\n\
                   DO $body$ BEGIN PERFORM 1; END $body$;\nSELECT a$b$c FROM t;";
        let parts = texts(sql);
        assert_eq!(parts.len(), 3, "{parts:#?}");
        assert!(parts[0].ends_with("SELECT 2;\nEND;"));
        assert_eq!(parts[2], "SELECT a$b$c FROM t;");
    }

    #[test]
    fn trailing_statement_without_semicolon_and_comment_only_chunks() {
        let sql = "-- header\n\n  SELECT 1;\n-- only a comment;\n;  \nSELECT 2  \n";
        let parts = split(sql);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].text, "SELECT 1;");
        assert_eq!(line_col(sql, parts[0].start), (3, 3));
        assert_eq!(parts[1].text, "SELECT 2");
    }

    #[test]
    fn positions_map_to_lines_and_columns_in_characters() {
        let text = "SELECT 'é';\nSELECT nope;";
        let byte = char_position_to_byte(text, 20);
        assert_eq!(&text[byte..byte + 4], "nope");
        assert_eq!(line_col(text, byte), (2, 8));
        assert_eq!(line_col(text, 0), (1, 1));
        assert_eq!(line_col(text, 10_000), (2, 13));
    }

    #[test]
    fn finds_transaction_control() {
        let stmts = split("CREATE TABLE a (x int);\nCOMMIT;\n");
        assert_eq!(transaction_control(&stmts).unwrap().text, "COMMIT;");
        let stmts = split("CREATE FUNCTION f() RETURNS int BEGIN ATOMIC SELECT 1; END;");
        assert!(transaction_control(&stmts).is_none());
    }
}
