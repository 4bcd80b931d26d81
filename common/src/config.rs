//! Loading TOML config files into typed structs, with errors that name the file, the
//! key and what was expected.
//!
//! Config structs use `#[serde(deny_unknown_fields)]` so a typo is an error rather than
//! a silently ignored setting.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `key` is the dotted path to the offending setting (`host[1].mac`), empty when
    /// the problem is the file's syntax as a whole.
    #[error("config file {path}{}: {message}", key_suffix(key))]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
}

fn key_suffix(key: &str) -> String {
    if key.is_empty() || key == "." {
        String::new()
    } else {
        format!(", key `{key}`")
    }
}

/// Reads and parses `path`.
pub fn load_toml<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_toml(path, &text)
}

/// Parses `text` as if read from `path` (the path is only used in errors).
pub fn parse_toml<T: DeserializeOwned>(path: &Path, text: &str) -> Result<T, ConfigError> {
    let de = toml::Deserializer::parse(text).map_err(|e| ConfigError::Invalid {
        path: path.to_owned(),
        key: String::new(),
        message: one_line(&e.to_string()),
    })?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        ConfigError::Invalid {
            path: path.to_owned(),
            key,
            message: one_line(&e.inner().to_string()),
        }
    })
}

/// toml's messages draw a multi-line snippet; a log line wants the gist plus line number.
fn one_line(msg: &str) -> String {
    msg.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('|') && !l.starts_with('^'))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Cfg {
        name: String,
        #[serde(default)]
        host: Vec<Host>,
    }
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Host {
        port: u16,
    }

    #[test]
    fn names_file_key_and_expectation() {
        let p = Path::new("/etc/wisp/x.toml");
        let e = parse_toml::<Cfg>(
            p,
            "name = \"a\"\n[[host]]\nport = 1\n[[host]]\nport = \"x\"\n",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("/etc/wisp/x.toml"), "{e}");
        assert!(e.contains("host[1].port"), "{e}");
        assert!(e.contains("u16") || e.contains("integer"), "{e}");

        let e = parse_toml::<Cfg>(p, "name = \"a\"\nnmae = 2\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("nmae"), "{e}");

        let e = parse_toml::<Cfg>(p, "name = \n").unwrap_err().to_string();
        assert!(e.contains("/etc/wisp/x.toml"), "{e}");
    }
}
