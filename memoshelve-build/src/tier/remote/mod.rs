//! The remote tier (DESIGN.md section 8): a cache shared by CI runners and people, below the disk
//! tier, on storage engines that exist already: Redis, an HTTP cache (nginx WebDAV,
//! bazel-remote), or an S3 bucket. Each backend is an optional cargo feature.
//!
//! The remote holds the same two things as a cache root, under the bazel-remote layout:
//!
//! ```text
//! ac/<hex key>        the entry: "<signature hex or `unsigned`>\n" + its payload (postcard:
//!                     format, key, and the disk tier's EntryRecord, the value inline when small)
//! cas/<blake3 hex>    blobs: values larger than 1 KiB and the files of file steps
//! ```
//!
//! Reads go through the disk tier: a remote entry is checked (its key and name, its signature
//! when `MEMOSHELVE_REMOTE_KEY` is set, every blob by size and blake3), written into the local
//! root, and then served by the disk tier's own lookup, which checks it once more. A miss that
//! is computed is written to disk, then pushed (blobs the remote has are skipped; entries are
//! written once). Anything the remote does wrong is a miss and one warning; a remote that fails
//! `BREAKER_FAILURES` times in a row is left alone for the rest of the process.
//!
//! The client (`Remote`, `Pushed`, and the read and write paths of a build) is compiled with
//! any `remote-*` feature, or with `maintenance` (where a backend without its feature is an
//! error that names the feature). Without them, a build's only remote code is the settings
//! below: a remote configured anyway is named in one warning that says which feature to add,
//! and the build goes on with the local tiers.

use std::fmt;

use serde::Serialize;

use crate::project::config::{Config, Project};

#[cfg(feature = "_remote-client")]
mod client;
#[cfg(feature = "maintenance")]
pub use client::Pulled;
#[cfg(feature = "_remote-client")]
pub use client::{BREAKER_FAILURES, Pushed, Remote};
#[cfg(feature = "_remote-client")]
pub(crate) use client::{fetch, write_through};

/// What a process may do with the remote (`MEMOSHELVE_REMOTE_MODE`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Read hits, write what was computed (trusted CI, the default).
    ReadWrite,
    /// Read hits, never write (pull requests, laptops).
    ReadOnly,
    /// Do not use the remote.
    Off,
}

impl Mode {
    fn parse(text: &str) -> Option<Mode> {
        match text.trim().to_ascii_lowercase().as_str() {
            "read-write" | "readwrite" | "rw" => Some(Mode::ReadWrite),
            "read-only" | "readonly" | "ro" => Some(Mode::ReadOnly),
            "off" | "none" | "0" => Some(Mode::Off),
            _ => None,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Mode::ReadWrite => "read-write",
            Mode::ReadOnly => "read-only",
            Mode::Off => "off",
        })
    }
}

/// The remote settings of a process: the environment over the project's configuration.
///
/// | environment | configuration key | meaning |
/// | --- | --- | --- |
/// | `MEMOSHELVE_REMOTE` | `remote` | `redis://host:port/db`, `http(s)://host/path`, `s3://bucket/prefix` |
/// | `MEMOSHELVE_REMOTE_MODE` | `remote-mode` | `read-write` (default), `read-only`, `off` |
/// | `MEMOSHELVE_REMOTE_TOKEN` | `remote-token` | HTTP: sent as `Authorization: Bearer` |
/// | `MEMOSHELVE_REMOTE_KEY` | `remote-key` | secret: sign entries (a blake3 MAC), and accept only signed ones |
/// | `MEMOSHELVE_BUILD_SCRIPTS_REMOTE` | – | `1`: transparent mode's entries travel too, signed (see [`Settings::carries`]) |
///
/// S3 reads `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`
/// (or `AWS_DEFAULT_REGION`) and `AWS_ENDPOINT_URL` (any S3-compatible server, path-style).
/// Secrets are never printed: [`Settings::redacted_url`] is what messages show.
#[derive(Clone)]
pub struct Settings {
    /// The remote's URL as configured (it may hold a password: print [`Settings::redacted_url`]).
    pub url: String,
    /// What this process may do.
    pub mode: Mode,
    /// The bearer token for HTTP remotes.
    pub token: Option<String>,
    /// The secret entries are signed and checked with.
    pub signing_key: Option<String>,
    /// Whether the user opted transparent mode's entries into the remote
    /// (`MEMOSHELVE_BUILD_SCRIPTS_REMOTE=1`); they travel only signed ([`Settings::carries`]).
    pub build_scripts: bool,
    /// Where the URL was set: `MEMOSHELVE_REMOTE` or a configuration file.
    pub origin: String,
}

impl fmt::Debug for Settings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Settings")
            .field("url", &self.redacted_url())
            .field("mode", &self.mode)
            .field("token", &self.token.as_ref().map(|_| "***"))
            .field("signing_key", &self.signing_key.as_ref().map(|_| "***"))
            .field("build_scripts", &self.build_scripts)
            .field("origin", &self.origin)
            .finish()
    }
}

/// The opt-in of transparent mode's entries into the remote.
pub const BUILD_SCRIPTS_REMOTE: &str = "MEMOSHELVE_BUILD_SCRIPTS_REMOTE";

/// Whether this process opted transparent mode's entries into the remote
/// (`MEMOSHELVE_BUILD_SCRIPTS_REMOTE` set, not empty and not `0`): a variable only, so a caller
/// can skip reading the remote's settings without it.
pub fn build_scripts_opted_in() -> bool {
    env_value(BUILD_SCRIPTS_REMOTE).is_some_and(|value| value != "0")
}

fn env_value(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|value| !value.trim().is_empty())
}

impl Settings {
    /// The settings of a project's processes: `MEMOSHELVE_REMOTE*` variables, else the keys of
    /// its configuration ([`crate::config`]). `None` when no remote is configured.
    ///
    /// # Errors
    /// A message naming the setting when a mode is not one of `read-write`, `read-only`, `off`.
    pub fn resolve(project: &Project) -> crate::Result<Option<Settings>> {
        Settings::resolve_text(project).map_err(|message| crate::Error::Remote { message })
    }

    fn resolve_text(project: &Project) -> Result<Option<Settings>, String> {
        let config = Config::load(project);
        let setting = |env: &str, key: &str| -> Option<(String, String)> {
            match env_value(env) {
                Some(value) => Some((value, env.to_owned())),
                None => config.get(key).map(|setting| {
                    (setting.value.clone(), format!("`{key}` in {}", setting.origin()))
                }),
            }
        };
        let Some((url, origin)) = setting("MEMOSHELVE_REMOTE", "remote") else {
            return Ok(None);
        };
        let mode = match setting("MEMOSHELVE_REMOTE_MODE", "remote-mode") {
            None => Mode::ReadWrite,
            Some((text, origin)) => Mode::parse(&text)
                .ok_or_else(|| format!("{origin} is {text:?}: use read-write, read-only or off"))?,
        };
        Ok(Some(Settings {
            url: url.trim().to_owned(),
            mode,
            token: setting("MEMOSHELVE_REMOTE_TOKEN", "remote-token").map(|(token, _)| token),
            signing_key: setting("MEMOSHELVE_REMOTE_KEY", "remote-key").map(|(key, _)| key),
            build_scripts: build_scripts_opted_in(),
            origin,
        }))
    }

    /// Whether entries of cache `name` may go to and come from this remote. Transparent mode's
    /// (`build-script.<package>`, `rustc.<package>...`) restore what is linked into binaries:
    /// they travel only when the user opted in (`MEMOSHELVE_BUILD_SCRIPTS_REMOTE=1`) and
    /// `MEMOSHELVE_REMOTE_KEY` is set, so that each is signed when written and its signature is
    /// checked when read.
    pub fn carries(&self, name: &str) -> bool {
        !crate::cargo::is_transparent(name) || self.carries_build_scripts()
    }

    /// Whether transparent mode's entries travel: opted in, and a key to sign and check them.
    pub fn carries_build_scripts(&self) -> bool {
        self.build_scripts && self.signing_key.is_some()
    }
    /// The URL without its password or user name, for messages and `--json`.
    pub fn redacted_url(&self) -> String {
        redact(&self.url)
    }
}

/// A URL without credentials: `user:password@` becomes `***@`, and the values of query
/// parameters that look like secrets (`token`, `password`, `secret`, `key`, `signature`,
/// `credential`) become `***`.
pub fn redact(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let mut redacted = match base.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => format!("{scheme}://***{}", &rest[at..]),
                None => base.to_owned(),
            }
        }
        None => base.to_owned(),
    };
    if let Some(query) = query {
        redacted.push('?');
        let params: Vec<String> = query
            .split('&')
            .map(|param| match param.split_once('=') {
                Some((name, _)) if secret_name(name) => format!("{name}=***"),
                _ => param.to_owned(),
            })
            .collect();
        redacted.push_str(&params.join("&"));
    }
    redacted
}

fn secret_name(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["token", "pass", "secret", "key", "signature", "credential", "auth"]
        .iter()
        .any(|word| name.contains(word))
}

#[cfg(not(all(feature = "remote-redis", feature = "remote-http", feature = "remote-s3")))]
fn without_feature(url: &str, feature: &str) -> String {
    format!(
        "remote {}: this build of memoshelve-build has no `{feature}` feature \
         (add `features = [\"{feature}\"]` to its dependency)",
        redact(url)
    )
}

/// The backends, by URL scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Scheme {
    Redis,
    Http,
    S3,
}

impl Scheme {
    /// The scheme of a remote URL.
    ///
    /// # Errors
    /// A URL that is none of `redis://`, `http(s)://`, `s3://`.
    fn of(url: &str) -> Result<Scheme, String> {
        let scheme = url.split_once("://").map(|(scheme, _)| scheme.to_ascii_lowercase());
        match scheme.as_deref() {
            Some("redis") => Ok(Scheme::Redis),
            Some("http" | "https") => Ok(Scheme::Http),
            Some("s3") => Ok(Scheme::S3),
            _ => Err(format!("remote {}: not a redis://, http(s):// or s3:// URL", redact(url))),
        }
    }

    /// The cargo feature of memoshelve-build that has this backend.
    #[cfg(not(all(feature = "remote-redis", feature = "remote-http", feature = "remote-s3")))]
    fn feature(self) -> &'static str {
        match self {
            Scheme::Redis => "remote-redis",
            Scheme::Http => "remote-http",
            Scheme::S3 => "remote-s3",
        }
    }
}

/// Without a remote feature, the read path's hook: a remote that is configured (and not `off`)
/// is named once, in a warning that says which feature it needs; nothing is fetched.
#[cfg(not(feature = "_remote-client"))]
pub(crate) fn fetch(_disk: &crate::tier::disk::Disk, _name: &str, _key: &crate::key::Key) -> bool {
    static CHECKED: std::sync::Once = std::sync::Once::new();
    CHECKED.call_once(|| {
        let message = match Settings::resolve_text(&Project::from_env()) {
            Ok(Some(settings)) if settings.mode != Mode::Off => match Scheme::of(&settings.url) {
                Ok(scheme) => without_feature(&settings.url, scheme.feature()),
                Err(message) => message,
            },
            Ok(_) => return,
            Err(message) => message,
        };
        crate::cargo::warn_once("remote settings", &format!("{message}; not using the remote"));
    });
    false
}

/// Without a remote feature, the write path's hook: nothing to push to (the read path warned).
#[cfg(not(feature = "_remote-client"))]
pub(crate) fn write_through(_disk: &crate::tier::disk::Disk, _name: &str, _key: &crate::key::Key) {}

#[cfg(test)]
mod tests {
    /// Transparent mode's entries, build scripts' runs and compiles alike, travel only opted
    /// into and signed; other caches' always.
    #[test]
    fn entries_linked_into_binaries_travel_only_opted_in_and_signed() {
        let settings = |build_scripts: bool, signing_key: Option<&str>| super::Settings {
            url: "redis://cache".to_owned(),
            mode: super::Mode::ReadWrite,
            token: None,
            signing_key: signing_key.map(str::to_owned),
            build_scripts,
            origin: "test".to_owned(),
        };
        for name in ["build-script.zstd-sys", "rustc.libc", "rustc.zstd-sys.build_script_build"] {
            assert!(!settings(false, None).carries(name), "{name}");
            assert!(!settings(true, None).carries(name), "{name}");
            assert!(!settings(false, Some("k")).carries(name), "{name}");
            assert!(settings(true, Some("k")).carries(name), "{name}");
        }
        assert!(settings(false, None).carries("codegen"));
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(super::redact("redis://:hunter2@cache:6379/0"), "redis://***@cache:6379/0");
        assert_eq!(super::redact("https://u:p@h/x?token=abc&b=1"), "https://***@h/x?token=***&b=1");
        assert_eq!(super::redact("s3://bucket/prefix"), "s3://bucket/prefix");
        assert_eq!(super::redact("http://h/a@b"), "http://h/a@b");
    }
}
