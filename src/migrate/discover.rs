//! Finding migration files in a directory: names, versions, order, and the checks that need
//! no database (duplicates, gaps, transaction control inside a transactional file).

use std::path::Path;

use super::sql;
use super::{MigrateError, Migration};

/// Reads every migration in `dir`, in ascending version order.
///
/// Files named `NNNN_description.sql`, `V<N>__description.sql` or `<N>_description.up.sql`
/// are migrations; `.down.sql` (and Flyway's `U<N>__` undo) files, other extensions, hidden
/// files and subdirectories are ignored. Any other `.sql` file is an error rather than being
/// skipped, so a misnamed migration is never silently left out.
///
/// # Errors
/// `Dir` when the directory cannot be listed; `FileName`, `Read`, `Duplicate`, `Gap` and
/// `TransactionControl` naming the files at fault.
pub fn discover(dir: &Path) -> Result<Vec<Migration>, MigrateError> {
    let dir_error = |source: std::io::Error| MigrateError::Dir {
        dir: dir.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(dir).map_err(dir_error)?;
    if !meta.is_dir() {
        return Err(MigrateError::NotADirectory {
            dir: dir.to_path_buf(),
        });
    }
    let entries = std::fs::read_dir(dir).map_err(dir_error)?;
    let mut migrations = Vec::new();
    for entry in entries {
        let entry = entry.map_err(dir_error)?;
        let path = entry.path();
        let Some(file) = entry.file_name().to_str().map(str::to_string) else {
            if path.extension().is_some_and(|e| e == "sql") {
                return Err(MigrateError::FileName {
                    file: path.display().to_string(),
                    reason: "the name is not valid UTF-8".into(),
                });
            }
            continue;
        };
        if file.starts_with('.') || parse_file_name(&file).is_none() || path.is_dir() {
            continue;
        }
        let bytes = std::fs::read(&path).map_err(|source| MigrateError::Read {
            path: path.clone(),
            source,
        })?;
        let text = String::from_utf8(bytes).map_err(|source| MigrateError::NotText {
            path: path.clone(),
            source,
        })?;
        migrations.push(Migration::new(&file, &text)?);
    }
    migrations.sort_by(|a, b| a.version.cmp(&b.version).then(a.file.cmp(&b.file)));
    check_set(&migrations)?;
    Ok(migrations)
}

/// Parses a file name into (version, description). `None` when the file is not meant to be
/// a migration (not `.sql`, a down/undo file); `Some(Err)` when it is a `.sql` file whose
/// name has none of the accepted forms.
pub(super) fn parse_file_name(file: &str) -> Option<Result<(i64, String), String>> {
    if !Path::new(file)
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("sql"))
    {
        return None;
    }
    let mut stem = &file[..file.len() - ".sql".len()];
    let inner = Path::new(stem).extension().and_then(|e| e.to_str());
    match inner.map(str::to_ascii_lowercase).as_deref() {
        Some("down") => return None,
        Some("up") => stem = &stem[..stem.len() - ".up".len()],
        _ => {}
    }
    let expected = "expected NNNN_description.sql, V<N>__description.sql or <N>_description.up.sql";
    let (digits, name) = if let Some(rest) = stem.strip_prefix(['V', 'v']) {
        match rest.split_once("__") {
            Some(parts) => parts,
            None => return Some(Err(format!("no `__` after the version; {expected}"))),
        }
    } else if stem.starts_with(['U', 'u'])
        && stem[1..].starts_with(|c: char| c.is_ascii_digit())
        && stem.contains("__")
    {
        return None;
    } else if stem.starts_with("R__") || stem.starts_with("r__") {
        return Some(Err(
            "repeatable migrations (R__) are not supported".to_string()
        ));
    } else {
        match stem.split_once('_') {
            Some(parts) => parts,
            None => return Some(Err(expected.to_string())),
        }
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Err(format!(
            "the version '{digits}' is not a whole number; {expected}"
        )));
    }
    let Ok(version) = digits.parse::<i64>() else {
        return Some(Err(format!("the version '{digits}' is too large")));
    };
    if name.trim().is_empty() {
        return Some(Err(format!("no description after the version; {expected}")));
    }
    Some(Ok((version, name.to_string())))
}

/// Checks a set sorted by version: no duplicate versions, no gaps, and no transaction
/// control statements in transactional files.
///
/// # Errors
/// `Duplicate`, `Gap` or `TransactionControl` naming the files.
pub fn check_set(migrations: &[Migration]) -> Result<(), MigrateError> {
    for pair in migrations.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if a.version == b.version {
            return Err(MigrateError::Duplicate {
                version: a.version,
                first: a.file.clone(),
                second: b.file.clone(),
            });
        }
        if b.version < a.version {
            return Err(MigrateError::FileName {
                file: b.file.clone(),
                reason: format!("listed after {} but has a lower version", a.file),
            });
        }
        if b.version != a.version + 1 {
            return Err(MigrateError::Gap {
                before: a.file.clone(),
                after: b.file.clone(),
            });
        }
    }
    for m in migrations.iter().filter(|m| m.transactional) {
        let statements = sql::split(&m.sql);
        if let Some(s) = sql::transaction_control(&statements) {
            let first_line = s.text.lines().next().unwrap_or("").trim();
            return Err(MigrateError::TransactionControl {
                file: m.file.clone(),
                line: sql::line_col(&m.sql, s.start).0,
                statement: first_line.chars().take(40).collect(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_naming_styles() {
        assert_eq!(
            parse_file_name("0001_create_users.sql"),
            Some(Ok((1, "create_users".into())))
        );
        assert_eq!(
            parse_file_name("V12__add index.sql"),
            Some(Ok((12, "add index".into())))
        );
        assert_eq!(
            parse_file_name("3_fill.up.sql"),
            Some(Ok((3, "fill".into())))
        );
        assert_eq!(parse_file_name("3_fill.down.sql"), None);
        assert_eq!(parse_file_name("U3__undo.sql"), None);
        assert_eq!(parse_file_name("README.md"), None);
        assert_eq!(parse_file_name("notes.sql.bak"), None);
    }

    #[test]
    fn rejects_misnamed_sql_files() {
        for bad in [
            "schema.sql",
            "0003-add.sql",
            "V2_x.sql",
            "V1.1__x.sql",
            "0004_.sql",
            "R__views.sql",
            "99999999999999999999_big.sql",
        ] {
            assert!(
                matches!(parse_file_name(bad), Some(Err(_))),
                "{bad} should be rejected"
            );
        }
    }

    fn m(file: &str, sql: &str) -> Migration {
        Migration::new(file, sql).unwrap()
    }

    #[test]
    fn a_set_must_be_consecutive_and_unique() {
        let ok = [m("0001_a.sql", "SELECT 1;"), m("0002_b.sql", "SELECT 2;")];
        check_set(&ok).unwrap();
        let gap = [m("0001_a.sql", ""), m("0003_c.sql", "")];
        let e = check_set(&gap).unwrap_err().to_string();
        assert!(e.contains("0001_a.sql") && e.contains("0003_c.sql"), "{e}");
        let dup = [m("0002_a.sql", ""), m("V2__b.sql", "")];
        let e = check_set(&dup).unwrap_err().to_string();
        assert!(e.contains("0002_a.sql") && e.contains("V2__b.sql"), "{e}");
    }

    #[test]
    fn transaction_control_needs_the_marker() {
        let sql = "CREATE TABLE a (x int);\n\nCOMMIT;\n";
        let e = check_set(&[m("0001_a.sql", sql)]).unwrap_err().to_string();
        assert!(e.contains("0001_a.sql") && e.contains("line 3"), "{e}");
        let marked = format!("-- pgkeep:no-transaction\n{sql}");
        check_set(&[m("0001_a.sql", &marked)]).unwrap();
    }
}
