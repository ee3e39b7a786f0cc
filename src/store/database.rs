//! Which database a store lives in: the `db` setting, read once.
//!
//! A path names a SQLite file (the default, `./tracegate.db`); a
//! `postgres://` or `postgresql://` URL names a PostgreSQL database that
//! several gateway replicas may share. Everything that opens a store — the
//! gateway, the query commands, prune — takes a [`Database`], so the choice
//! is made in this one place and the rest only asks which it was.
//!
//! A URL may carry a password: [`Database`]'s `Display` never shows it, so
//! the banner, the log and error messages can name the database safely.

use std::fmt;
use std::path::{Path, PathBuf};

/// A store's database: a SQLite file or a PostgreSQL URL.
#[derive(Clone, PartialEq, Eq)]
pub enum Database {
    /// A SQLite file (created on first start).
    Sqlite(PathBuf),
    /// A PostgreSQL database (which must exist; its tables are created on
    /// first start).
    Postgres(PostgresUrl),
}

/// A PostgreSQL connection URL, and the same without its password.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresUrl {
    url: String,
    shown: String,
}

impl Database {
    /// Reads the `db` setting: a `postgres://` or `postgresql://` URL, else
    /// a path.
    pub fn parse(text: &str) -> Database {
        let lower = text.to_ascii_lowercase();
        if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
            Database::Postgres(PostgresUrl {
                url: text.to_string(),
                shown: without_password(text),
            })
        } else {
            Database::Sqlite(PathBuf::from(text))
        }
    }

    /// The SQLite file, when this is one.
    pub fn sqlite_path(&self) -> Option<&Path> {
        match self {
            Database::Sqlite(path) => Some(path),
            Database::Postgres(_) => None,
        }
    }
}

impl From<&Path> for Database {
    fn from(path: &Path) -> Database {
        Database::Sqlite(path.to_path_buf())
    }
}

impl From<&PathBuf> for Database {
    fn from(path: &PathBuf) -> Database {
        Database::Sqlite(path.clone())
    }
}

impl PostgresUrl {
    /// The URL to connect with (it may hold a password: never show it).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The URL with its password replaced by `***`, for messages.
    pub fn shown(&self) -> &str {
        &self.shown
    }
}

impl fmt::Display for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Database::Sqlite(path) => write!(f, "{}", path.display()),
            Database::Postgres(url) => f.write_str(url.shown()),
        }
    }
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Database({self})")
    }
}

impl fmt::Debug for PostgresUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PostgresUrl({})", self.shown)
    }
}

/// `url` with its password (of `user:password@`, or a `password=`
/// parameter) replaced by `***`.
fn without_password(url: &str) -> String {
    let url = without_userinfo_password(url);
    match url.split_once('?') {
        Some((head, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                    _ => p.to_string(),
                })
                .collect();
            format!("{head}?{}", params.join("&"))
        }
        None => url,
    }
}

/// `url` with the password of its `user:password@` part replaced by `***`.
fn without_userinfo_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return url.to_string();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}{tail}"),
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_is_a_sqlite_file() {
        assert_eq!(
            Database::parse("./x/traces.db"),
            Database::Sqlite(PathBuf::from("./x/traces.db"))
        );
    }

    #[test]
    fn a_postgres_url_is_postgresql_either_spelling() {
        for url in [
            "postgres://u@h/db",
            "postgresql://u@h/db",
            "POSTGRES://u@h/db",
        ] {
            assert!(
                matches!(Database::parse(url), Database::Postgres(_)),
                "{url}"
            );
        }
    }

    #[test]
    fn the_password_is_never_shown() {
        let db = Database::parse("postgresql://tg:s3cret@db.internal:5432/traces?sslmode=disable");
        let shown = format!("{db} {db:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(shown.contains("postgresql://tg:***@db.internal:5432/traces?sslmode=disable"));
        let db = Database::parse("postgres://h/db?user=tg&password=s3cret");
        assert_eq!(db.to_string(), "postgres://h/db?user=tg&password=***");
    }
}
