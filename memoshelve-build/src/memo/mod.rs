//! `Memo`: the builder and its calls. Memory tier first, then disk, then the function.

mod args;
#[cfg(feature = "async")]
mod asyncs;
mod audit;
mod call;
mod codec;
pub(crate) mod flight;
mod inspect;
pub(crate) mod outputs;
mod render;
pub(crate) mod status;
mod tiers;

pub use self::args::{ArgsEncoder, CustomArgs, PostcardArgs};

use std::any::{Any, TypeId, type_name};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cargo;
use crate::error::{Error, Result};
use crate::key::context::{self, ContextScope};
use crate::key::inputs::{self, Declared};
use crate::key::{self, Key, KeyInput, KeyPrefix};
use crate::memo::status::Log;
use crate::project::location::resolve_root;
use crate::tier::disk::Disk;
use crate::tier::memory::{DEFAULT_MEM_CAPACITY, Namespace};

/// How long the args rendering kept in an entry's metadata may grow.
const ARGS_RENDERING_MAX: usize = 200;

/// The bounds a cached value must meet: encodable, decodable, clonable out of the memory tier,
/// and shareable between threads.
pub trait Cacheable: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {}
impl<T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static> Cacheable for T {}

type Validator = Arc<dyn Fn(&dyn Any) -> bool + Send + Sync>;

/// A named cache with options: the full-control form of [`crate::cache`].
///
/// Builder methods take and return `self`; every option is optional. A `Memo` is cheap to make,
/// `Sync`, and may be kept in a `static` (`LazyLock`) or made per call.
#[derive(Clone)]
pub struct Memo<H = PostcardArgs> {
    options: Options,
    args_encoder: H,
}

/// Everything a `Memo` is but its arguments encoder, which is a type parameter: so that
/// changing the encoder ([`Memo::hash_args_with`]) moves the options over whole.
#[derive(Clone)]
struct Options {
    name: String,
    version: String,
    dir: Option<PathBuf>,
    disable: bool,
    /// Whether the remote tier (when one is configured) is used.
    remote: bool,
    mem_capacity: u64,
    log: Log,
    allow_race: bool,
    lock_timeout: Duration,
    validators: Vec<(TypeId, Validator)>,
    declared: Vec<Declared>,
    scope: ContextScope,
    /// The declared inputs and build context, resolved once per `Memo` (files hashed once),
    /// and the key prefix they give; replaced whenever a builder changes a part of the prefix.
    resolved: Arc<Resolved>,
    namespace: Arc<Namespace>,
    /// The disk tier, opened on first use; or why the root cannot be used.
    disk: Arc<OnceLock<std::result::Result<Disk, String>>>,
}

/// What a `Memo` works out once: its key inputs and its key prefix.
#[derive(Default)]
struct Resolved {
    inputs: OnceLock<Vec<KeyInput>>,
    /// The value type the prefix was computed for, and the prefix.
    prefix: OnceLock<(TypeId, [u8; 32])>,
}

impl<H> fmt::Debug for Memo<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Memo")
            .field("name", &self.options.name)
            .field("version", &self.options.version)
            .field("dir", &self.options.dir)
            .field("disable", &self.options.disable)
            .field("mem_capacity", &self.options.mem_capacity)
            .field("log", &self.options.log)
            .field("allow_race", &self.options.allow_race)
            .finish_non_exhaustive()
    }
}

impl Memo {
    /// A cache called `name`. Names group entries in listings and in the index
    /// (`memoshelve/v1/<name>/<key>`); they join the key, so two names never share a value.
    ///
    /// # Panics
    /// If `name` is empty or contains `/` or a control character (they would break the index).
    pub fn new(name: impl Into<String>) -> Memo {
        let name = name.into();
        assert!(
            !name.is_empty() && !name.chars().any(|ch| ch == '/' || ch.is_control()),
            "memoshelve cache name {name:?} must be non-empty, without '/' or control characters"
        );
        let log = std::env::var("MEMOSHELVE_LOG")
            .ok()
            .and_then(|text| Log::parse(&text))
            .unwrap_or(Log::NONE);
        let lock_timeout = std::env::var("MEMOSHELVE_LOCK_TIMEOUT")
            .ok()
            .and_then(|secs| secs.trim().parse().ok())
            .map_or(Duration::from_secs(600), Duration::from_secs);
        Memo {
            options: Options {
                namespace: Arc::new(Namespace { name: name.clone(), version: String::new() }),
                name,
                version: String::new(),
                dir: None,
                disable: false,
                remote: true,
                mem_capacity: DEFAULT_MEM_CAPACITY,
                log,
                allow_race: true,
                lock_timeout,
                validators: Vec::new(),
                declared: Vec::new(),
                scope: ContextScope::default(),
                resolved: Arc::default(),
                disk: Arc::default(),
            },
            args_encoder: PostcardArgs,
        }
    }

    /// Replaces the postcard encoding of the arguments by your own bytes (Python memoshelve's
    /// `get_hash`): for arguments that are not `Serialize`, or whose identity is cheaper to state
    /// than to encode (a digest you already have). The bytes join the key in place of the
    /// encoded arguments.
    ///
    /// ```
    /// # let dir = tempfile::tempdir()?;
    /// struct Grammar { text: String, digest: [u8; 32] }
    /// let memo = memoshelve_build::Memo::new("parse")
    ///     .dir(dir.path())
    ///     .hash_args_with(|grammar: &Grammar| grammar.digest.to_vec());
    /// let grammar = Grammar { text: "a b c".into(), digest: [7; 32] };
    /// let words: usize = memo.call(&grammar, || grammar.text.split(' ').count());
    /// assert_eq!(words, 3);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[doc(alias = "get_hash")]
    pub fn hash_args_with<A: ?Sized, F: Fn(&A) -> Vec<u8>>(self, hasher: F) -> Memo<CustomArgs<F>> {
        Memo { options: self.options, args_encoder: CustomArgs(hasher) }
    }
}

impl<H> Memo<H> {
    /// The cache root to use instead of the default (see [`crate::resolve_root`]).
    pub fn dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.options.dir = Some(dir.as_ref().to_owned());
        self.options.disk = Arc::default();
        self
    }

    /// A salt: bump it to invalidate every entry this cache made before.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.options.version = version.into();
        self.options.namespace = Arc::new(Namespace {
            name: self.options.name.clone(),
            version: self.options.version.clone(),
        });
        self.options.resolved = Arc::default();
        self
    }

    /// Bypasses both tiers: every call computes, nothing is read or written.
    /// The environment variable `MEMOSHELVE_DISABLE=1` does the same for every cache.
    pub fn disable(mut self, disable: bool) -> Self {
        self.options.disable = disable;
        self
    }

    /// Keeps this cache off the remote tier: nothing is fetched from it or written to it,
    /// whatever `MEMOSHELVE_REMOTE` says (the disk and memory tiers work as ever). For results
    /// that must not cross machines unvetted.
    pub fn local_only(mut self) -> Self {
        self.options.remote = false;
        self
    }

    /// Bounds the bytes this cache name may hold in the memory tier (default 256 MiB); least
    /// recently used values are dropped first (they stay on disk). `0` turns the memory tier off
    /// for this `Memo`: it neither reads nor fills it, so every hit comes from disk.
    pub fn mem_capacity(mut self, bytes: u64) -> Self {
        self.options.mem_capacity = bytes;
        self
    }

    /// Which events to report. `MEMOSHELVE_LOG` overrides it.
    pub fn log(mut self, log: Log) -> Self {
        if std::env::var("MEMOSHELVE_LOG").ok().and_then(|text| Log::parse(&text)).is_none() {
            self.options.log = log;
        }
        self
    }

    /// `true` (the default): processes that miss the same key at once may all compute it (the
    /// last write wins; all write the same value). `false`: a lock per key, so one process
    /// computes while the others wait for its result (at most `MEMOSHELVE_LOCK_TIMEOUT`
    /// seconds, default 600, then they compute too).
    pub fn allow_race(mut self, allow_race: bool) -> Self {
        self.options.allow_race = allow_race;
        self
    }

    /// A check for cached values of type `T`: a cached value that fails it is a miss, and the
    /// fresh value replaces it. Fresh values are not checked. For a file step
    /// ([`Memo::outputs`]), `T` is the step's own value, checked before its files are restored.
    pub fn validate<T: 'static>(
        mut self,
        check: impl Fn(&T) -> bool + Send + Sync + 'static,
    ) -> Self {
        let validator: Validator =
            Arc::new(move |value: &dyn Any| value.downcast_ref::<T>().is_none_or(&check));
        self.options.validators.retain(|(type_id, _)| *type_id != TypeId::of::<T>());
        self.options.validators.push((TypeId::of::<T>(), validator));
        self
    }

    fn declare(mut self, declared: Declared) -> Self {
        self.options.declared.push(declared);
        self.options.resolved = Arc::default();
        self
    }

    /// The contents of this file join the key (a missing file is recorded as missing). Inside a
    /// build script cargo is also told to rerun it when the file changes. A relative path is
    /// taken from `CARGO_MANIFEST_DIR`, and that is how it is named in the key, so checkouts at
    /// different paths share entries.
    pub fn input_file(self, path: impl AsRef<Path>) -> Self {
        self.declare(Declared::File(path.as_ref().to_owned()))
    }

    /// [`Memo::input_file`] for each of these files.
    pub fn input_files<P: AsRef<Path>>(mut self, paths: impl IntoIterator<Item = P>) -> Self {
        for path in paths {
            self = self.input_file(path);
        }
        self
    }

    /// Every file matching this glob (`*`, `?`, `[..]`, and `**` for any depth; relative to
    /// `CARGO_MANIFEST_DIR`) joins the key, in sorted order, so adding, removing or editing a
    /// matching file changes it. Cargo is told to watch the pattern's base directory, so a new
    /// matching file reruns the build script. As in `.gitignore`, a pattern starting with `!`
    /// excludes the files it matches from every glob of this `Memo`:
    /// `.input_glob("proto/**/*.proto").input_glob("!proto/vendor/**")`.
    pub fn input_glob(self, pattern: impl Into<String>) -> Self {
        self.declare(Declared::Glob(pattern.into()))
    }

    /// The value of this environment variable (or its absence) joins the key; inside a build
    /// script cargo is told to rerun it when the variable changes.
    pub fn env(self, name: impl Into<String>) -> Self {
        self.declare(Declared::Env(name.into()))
    }

    /// A value the caller worked out joins the key under `name`, as it is (a hash of something
    /// the other inputs cannot name, a normalized setting); `cargo memoshelve explain` shows it
    /// by name when it changes. Nothing is told to cargo.
    ///
    /// ```
    /// let memo = memoshelve_build::Memo::new("codegen").input_value("schema", "v7");
    /// let part = memo.key_inputs().iter().find(|input| input.kind == "value").unwrap();
    /// assert_eq!((part.name.as_str(), part.value.as_str()), ("schema", "v7"));
    /// ```
    pub fn input_value(self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.declare(Declared::Value { name: name.into(), value: value.into() })
    }

    /// The standard output of `command args..` (e.g. `protoc --version`) joins the key.
    pub fn tool_version(self, command: impl Into<String>, args: &[&str]) -> Self {
        let args = args.iter().map(|arg| (*arg).to_owned()).collect();
        self.declare(Declared::Tool { command: command.into(), args })
    }

    /// `true`: the hash of the running executable (in a build script, the build script's own
    /// binary) joins the key, so editing `build.rs` invalidates the entries it made.
    pub fn invalidate_on_build_script_change(self, invalidate: bool) -> Self {
        if invalidate { self.declare(Declared::BuildScript) } else { self }
    }

    /// The step's result does not depend on the target platform: `TARGET` and the target's
    /// `CARGO_CFG_*` values leave the key, so builds for different targets share the entry.
    pub fn target_independent(mut self) -> Self {
        self.options.scope.target = false;
        self.options.resolved = Arc::default();
        self
    }

    /// The step's result does not depend on the profile: `PROFILE`, `OPT_LEVEL`, `DEBUG` and
    /// the profile's cfgs (`debug_assertions`, `overflow_checks`, `panic`) leave the key, so
    /// `cargo check`, debug and release builds share the entry.
    pub fn profile_independent(mut self) -> Self {
        self.options.scope.profile = false;
        self.options.resolved = Arc::default();
        self
    }

    /// The step's result does not depend on the package's enabled features:
    /// `CARGO_FEATURE_*` and `CARGO_CFG_FEATURE` leave the key.
    pub fn features_independent(mut self) -> Self {
        self.options.scope.features = false;
        self.options.resolved = Arc::default();
        self
    }

    /// The declared inputs and build context as they join the key, sorted.
    ///
    /// Inside a build script (cargo sets `OUT_DIR` and `CARGO_MANIFEST_DIR`) this includes, unless
    /// opted out: `TARGET`, `HOST`, `PROFILE`, `OPT_LEVEL`, `DEBUG`, every `CARGO_FEATURE_*` and
    /// `CARGO_CFG_*`, and the output of `$RUSTC -vV`. They are resolved once per `Memo`.
    pub fn key_inputs(&self) -> &[KeyInput] {
        self.options.resolved.inputs.get_or_init(|| {
            let mut parts = inputs::collect(&self.options.declared);
            // The root keeps `rustc -vV` between build-script runs; elsewhere it is not needed.
            let root = if cargo::in_build_script() { self.disk().map(Disk::root) } else { None };
            parts.extend(context::context(self.options.scope, root));
            parts.sort();
            parts
        })
    }

    /// The cache name.
    pub fn name(&self) -> &str {
        &self.options.name
    }

    /// The cache root this `Memo` uses, or `None` when the disk tier is off: disabled, no root
    /// can be resolved, or a call already found the root unusable (that was warned about once).
    /// Asking creates nothing: a root that does not exist yet is made by the first call that
    /// uses the disk tier.
    pub fn root(&self) -> Option<PathBuf> {
        if self.disabled() {
            return None;
        }
        match self.options.disk.get() {
            Some(opened) => opened.as_ref().ok().map(|disk| disk.root().to_owned()),
            None => resolve_root(self.options.dir.as_deref()).ok().map(|root| root.path),
        }
    }

    /// How long to wait for another process's or thread's work on a key (`MEMOSHELVE_LOCK_TIMEOUT`).
    pub(crate) fn lock_timeout(&self) -> Duration {
        self.options.lock_timeout
    }

    pub(crate) fn disabled(&self) -> bool {
        // Read once per process, like the other settings: a hit must not pay for a lookup.
        static DISABLED: OnceLock<bool> = OnceLock::new();
        self.options.disable || *DISABLED.get_or_init(|| env_flag("MEMOSHELVE_DISABLE"))
    }

    pub(crate) fn disk(&self) -> Option<&Disk> {
        if self.disabled() {
            return None;
        }
        self.options
            .disk
            .get_or_init(|| {
                let root = match resolve_root(self.options.dir.as_deref()) {
                    Ok(root) => {
                        for warning in &root.warnings {
                            cargo::warn_once(warning, warning);
                        }
                        root.path
                    }
                    Err(message) => {
                        cargo::warn_once("root", &format!("{message}; caching in memory only"));
                        return Err(message.to_string());
                    }
                };
                Disk::open(&root).map_err(|err| {
                    cargo::warn_once(
                        &format!("root {}", root.display()),
                        &format!("{err}; caching in memory only"),
                    );
                    err.to_string()
                })
            })
            .as_ref()
            .ok()
    }

    /// Why the cache root cannot be used, once [`Memo::disk`] found out.
    pub(crate) fn root_problem(&self) -> Option<&str> {
        self.options.disk.get()?.as_ref().err().map(String::as_str)
    }

    pub(crate) fn is_valid<T: 'static>(&self, value: &T) -> bool {
        self.options
            .validators
            .iter()
            .filter(|(type_id, _)| *type_id == TypeId::of::<T>())
            .all(|(_, check)| check(value as &dyn Any))
    }

    /// The key of `args` for a value of type `T`.
    fn try_key<A: ?Sized, T: 'static>(&self, args: &A) -> Result<Key>
    where
        H: ArgsEncoder<A>,
    {
        let bytes = self.args_encoder.encode(args).map_err(|source| Error::Encode {
            what: "arguments",
            name: self.options.name.clone(),
            source,
        })?;
        Ok(key::key_from(&self.key_prefix::<T>(), &bytes))
    }

    /// The digest of the key's parts other than the arguments, computed once for the first value
    /// type asked for (nearly every `Memo` has one) and again on each call for any other.
    fn key_prefix<T: 'static>(&self) -> [u8; 32] {
        let digest = || {
            KeyPrefix {
                name: &self.options.name,
                version: &self.options.version,
                type_name: type_name::<T>(),
                inputs: self.key_inputs(),
            }
            .digest()
        };
        let (type_id, prefix) =
            self.options.resolved.prefix.get_or_init(|| (TypeId::of::<T>(), digest()));
        if *type_id == TypeId::of::<T>() { *prefix } else { digest() }
    }

    /// [`Memo::try_key`] for the calls that never fail: an unencodable argument is warned about
    /// once, and the call goes uncached.
    pub(crate) fn key_of<A: ?Sized, T: 'static>(&self, args: &A) -> Option<Key>
    where
        H: ArgsEncoder<A>,
    {
        self.try_key::<A, T>(args)
            .inspect_err(|err| {
                cargo::warn_once(
                    &format!("encode {}", self.options.name),
                    &format!("{err}; not caching"),
                )
            })
            .ok()
    }
}

fn env_flag(name: &str) -> bool {
    std::env::var(name).is_ok_and(|value| matches!(value.trim(), "1" | "true" | "yes" | "on"))
}

fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut end = max;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests;
