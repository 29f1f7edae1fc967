//! `Memo`: the builder and its calls. Memory tier first, then disk, then the function.

mod asyncs;
mod audit;
mod codec;
pub(crate) mod flight;
pub(crate) mod outputs;
mod render;
pub(crate) mod status;

use std::any::{Any, TypeId, type_name};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cargo::{self, ContextScope};
use crate::error::{CodecError, Error, Result};
use crate::key::inputs::{self, Declared};
use crate::key::{self, Key, KeyInput, KeyPrefix};
use crate::memo::status::{Log, Status};
use crate::project::location::resolve_root;
use crate::tier::disk::{Disk, EntryRecord, FORMAT_VERSION, now_ms};
use crate::tier::memory::{DEFAULT_MEM_CAPACITY, MemoryTier, Namespace};

/// How long the args rendering kept in an entry's metadata may grow.
const ARGS_RENDERING_MAX: usize = 200;

/// The bounds a cached value must meet: encodable, decodable, clonable out of the memory tier,
/// and shareable between threads.
pub trait Cacheable: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {}
impl<T: Serialize + DeserializeOwned + Clone + Send + Sync + 'static> Cacheable for T {}

/// Turns call arguments into the bytes that join the key.
///
/// The default, [`PostcardArgs`], encodes any `Serialize` value with postcard. Replace it with
/// [`Memo::hash_args_with`] (Python memoshelve's `get_hash`).
pub trait ArgsEncoder<A: ?Sized> {
    /// The bytes that stand for `args` in the key.
    ///
    /// # Errors
    /// When the arguments cannot be encoded.
    fn encode(&self, args: &A) -> Result<Vec<u8>, CodecError>;
    /// A short text for people (kept in the entry's metadata, truncated).
    fn render(&self, args: &A) -> String;
}

/// The default [`ArgsEncoder`]: postcard bytes of any `Serialize` value.
///
/// Postcard writes fields in order, so the encoding is canonical for structs, tuples, `Vec` and
/// `BTreeMap`, but not for `HashMap`/`HashSet`, which iterate in random order: the same map then
/// gives different keys in different processes. Use `BTreeMap`/`BTreeSet` in arguments.
#[derive(Clone, Copy, Debug, Default)]
pub struct PostcardArgs;

impl<A: Serialize + ?Sized> ArgsEncoder<A> for PostcardArgs {
    fn encode(&self, args: &A) -> Result<Vec<u8>, CodecError> {
        // Room for typical arguments up front: `to_allocvec` grows from empty, and the regrowth
        // was a tenth of a memory hit. (Not `to_io`: at opt-level 0 its per-byte `write_all`
        // cost more than the growth it saves.)
        postcard::serialize_with_flavor(args, ArgsBytes(Vec::with_capacity(64)))
            .map_err(CodecError::from)
    }

    fn render(&self, args: &A) -> String {
        // Stop writing once the rendering is long enough: large arguments are not serialized
        // whole just to be cut (at opt-level 0 that could cost a second per miss). A little past
        // the limit, so that `record_for` sees the rendering was cut and marks it.
        crate::memo::render::json_text(args, ARGS_RENDERING_MAX + 4)
    }
}

/// postcard's `AllocVec` flavor with room up front.
struct ArgsBytes(Vec<u8>);

impl postcard::ser_flavors::Flavor for ArgsBytes {
    type Output = Vec<u8>;

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.push(data);
        Ok(())
    }

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        // At opt-level 0 `extend_from_slice` is a dozen calls deep, about 400 instructions even
        // for the one byte of a small integer's varint, which is most of what arguments are;
        // a few bytes pushed by index cost a tenth of that.
        if data.len() <= 16 {
            let mut index = 0;
            while index < data.len() {
                self.0.push(data[index]);
                index += 1;
            }
        } else {
            self.0.extend_from_slice(data);
        }
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Vec<u8>> {
        Ok(self.0)
    }
}

/// An [`ArgsEncoder`] made from a closure; see [`Memo::hash_args_with`].
#[derive(Clone)]
pub struct CustomArgs<F>(F);

impl<F> fmt::Debug for CustomArgs<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CustomArgs(..)")
    }
}

impl<A: ?Sized, F: Fn(&A) -> Vec<u8>> ArgsEncoder<A> for CustomArgs<F> {
    fn encode(&self, args: &A) -> Result<Vec<u8>, CodecError> {
        Ok((self.0)(args))
    }

    fn render(&self, args: &A) -> String {
        format!("custom hash {}", blake3::hash(&(self.0)(args)).to_hex())
    }
}

type Validator = Arc<dyn Fn(&dyn Any) -> bool + Send + Sync>;

/// A named cache with options: the full-control form of [`crate::cache`].
///
/// Builder methods take and return `self`; every option is optional. A `Memo` is cheap to make,
/// `Sync`, and may be kept in a `static` (`LazyLock`) or made per call.
#[derive(Clone)]
pub struct Memo<H = PostcardArgs> {
    name: String,
    version: String,
    dir: Option<PathBuf>,
    disable: bool,
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
    args_encoder: H,
    namespace: Arc<Namespace>,
    disk: Arc<OnceLock<Option<Disk>>>,
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
            .field("name", &self.name)
            .field("version", &self.version)
            .field("dir", &self.dir)
            .field("disable", &self.disable)
            .field("mem_capacity", &self.mem_capacity)
            .field("log", &self.log)
            .field("allow_race", &self.allow_race)
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
            namespace: Arc::new(Namespace { name: name.clone(), version: String::new() }),
            name,
            version: String::new(),
            dir: None,
            disable: false,
            mem_capacity: DEFAULT_MEM_CAPACITY,
            log,
            allow_race: true,
            lock_timeout,
            validators: Vec::new(),
            declared: Vec::new(),
            scope: ContextScope::default(),
            resolved: Arc::default(),
            args_encoder: PostcardArgs,
            disk: Arc::default(),
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
        Memo {
            name: self.name,
            version: self.version,
            dir: self.dir,
            disable: self.disable,
            mem_capacity: self.mem_capacity,
            log: self.log,
            allow_race: self.allow_race,
            lock_timeout: self.lock_timeout,
            validators: self.validators,
            declared: self.declared,
            scope: self.scope,
            resolved: self.resolved,
            args_encoder: CustomArgs(hasher),
            namespace: self.namespace,
            disk: self.disk,
        }
    }
}

impl<H> Memo<H> {
    /// The cache root to use instead of the default (see [`crate::resolve_root`]).
    pub fn dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.dir = Some(dir.as_ref().to_owned());
        self.disk = Arc::default();
        self
    }

    /// A salt: bump it to invalidate every entry this cache made before.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self.namespace =
            Arc::new(Namespace { name: self.name.clone(), version: self.version.clone() });
        self.resolved = Arc::default();
        self
    }

    /// Bypasses both tiers: every call computes, nothing is read or written.
    /// The environment variable `MEMOSHELVE_DISABLE=1` does the same for every cache.
    pub fn disable(mut self, disable: bool) -> Self {
        self.disable = disable;
        self
    }

    /// Bounds the bytes this cache name may hold in the memory tier (default 256 MiB); least
    /// recently used values are dropped first (they stay on disk). `0` turns the memory tier off
    /// for this `Memo`: it neither reads nor fills it, so every hit comes from disk.
    pub fn mem_capacity(mut self, bytes: u64) -> Self {
        self.mem_capacity = bytes;
        self
    }

    /// Which events to report. `MEMOSHELVE_LOG` overrides it.
    pub fn log(mut self, log: Log) -> Self {
        if std::env::var("MEMOSHELVE_LOG").ok().and_then(|text| Log::parse(&text)).is_none() {
            self.log = log;
        }
        self
    }

    /// `true` (the default): processes that miss the same key at once may all compute it (the
    /// last write wins; all write the same value). `false`: a lock per key, so one process
    /// computes while the others wait for its result (at most `MEMOSHELVE_LOCK_TIMEOUT`
    /// seconds, default 600, then they compute too).
    pub fn allow_race(mut self, allow_race: bool) -> Self {
        self.allow_race = allow_race;
        self
    }

    /// A check for cached values of type `T`: a cached value that fails it is a miss, and the
    /// fresh value replaces it. Fresh values are not checked.
    pub fn validate<T: 'static>(
        mut self,
        check: impl Fn(&T) -> bool + Send + Sync + 'static,
    ) -> Self {
        let validator: Validator =
            Arc::new(move |value: &dyn Any| value.downcast_ref::<T>().is_none_or(&check));
        self.validators.retain(|(type_id, _)| *type_id != TypeId::of::<T>());
        self.validators.push((TypeId::of::<T>(), validator));
        self
    }

    fn declare(mut self, declared: Declared) -> Self {
        self.declared.push(declared);
        self.resolved = Arc::default();
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
        self.scope.target = false;
        self.resolved = Arc::default();
        self
    }

    /// The step's result does not depend on the profile: `PROFILE`, `OPT_LEVEL`, `DEBUG` and
    /// the profile's cfgs (`debug_assertions`, `overflow_checks`, `panic`) leave the key, so
    /// `cargo check`, debug and release builds share the entry.
    pub fn profile_independent(mut self) -> Self {
        self.scope.profile = false;
        self.resolved = Arc::default();
        self
    }

    /// The step's result does not depend on the package's enabled features:
    /// `CARGO_FEATURE_*` and `CARGO_CFG_FEATURE` leave the key.
    pub fn features_independent(mut self) -> Self {
        self.scope.features = false;
        self.resolved = Arc::default();
        self
    }

    /// The declared inputs and build context as they join the key, sorted.
    ///
    /// Inside a build script (cargo sets `OUT_DIR` and `CARGO_MANIFEST_DIR`) this includes, unless
    /// opted out: `TARGET`, `HOST`, `PROFILE`, `OPT_LEVEL`, `DEBUG`, every `CARGO_FEATURE_*` and
    /// `CARGO_CFG_*`, and the output of `$RUSTC -vV`. They are resolved once per `Memo`.
    pub fn key_inputs(&self) -> &[KeyInput] {
        self.resolved.inputs.get_or_init(|| {
            let mut parts = inputs::collect(&self.declared);
            // The root keeps `rustc -vV` between build-script runs; elsewhere it is not needed.
            let root = if cargo::in_build_script() { self.disk().map(Disk::root) } else { None };
            parts.extend(cargo::context(self.scope, root));
            parts.sort();
            parts
        })
    }

    /// The cache name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The cache root this `Memo` uses, or `None` when the disk tier is off: disabled, no root
    /// can be resolved, or a call already found the root unusable (that was warned about once).
    /// Asking creates nothing: a root that does not exist yet is made by the first call that
    /// uses the disk tier.
    pub fn root(&self) -> Option<PathBuf> {
        if self.disabled() {
            return None;
        }
        match self.disk.get() {
            Some(opened) => opened.as_ref().map(|disk| disk.root().to_owned()),
            None => resolve_root(self.dir.as_deref()).ok().map(|root| root.path),
        }
    }

    /// How long to wait for another process's or thread's work on a key (`MEMOSHELVE_LOCK_TIMEOUT`).
    pub(crate) fn lock_timeout(&self) -> Duration {
        self.lock_timeout
    }

    pub(crate) fn disabled(&self) -> bool {
        // Read once per process, like the other settings: a hit must not pay for a lookup.
        static DISABLED: OnceLock<bool> = OnceLock::new();
        self.disable || *DISABLED.get_or_init(|| env_flag("MEMOSHELVE_DISABLE"))
    }

    pub(crate) fn disk(&self) -> Option<&Disk> {
        if self.disabled() {
            return None;
        }
        self.disk
            .get_or_init(|| {
                let root = match resolve_root(self.dir.as_deref()) {
                    Ok(root) => {
                        for warning in &root.warnings {
                            cargo::warn_once(warning, warning);
                        }
                        root.path
                    }
                    Err(message) => {
                        cargo::warn_once("root", &format!("{message}; caching in memory only"));
                        return None;
                    }
                };
                match Disk::open(&root) {
                    Ok(disk) => Some(disk),
                    Err(err) => {
                        cargo::warn_once(
                            &format!("root {}", root.display()),
                            &format!("{err}; caching in memory only"),
                        );
                        None
                    }
                }
            })
            .as_ref()
    }

    fn is_valid<T: 'static>(&self, value: &T) -> bool {
        self.validators
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
            name: self.name.clone(),
            source,
        })?;
        Ok(key::key_from(&self.key_prefix::<T>(), &bytes))
    }

    /// The digest of the key's parts other than the arguments, computed once for the first value
    /// type asked for (nearly every `Memo` has one) and again on each call for any other.
    fn key_prefix<T: 'static>(&self) -> [u8; 32] {
        let digest = || {
            KeyPrefix {
                name: &self.name,
                version: &self.version,
                type_name: type_name::<T>(),
                inputs: self.key_inputs(),
            }
            .digest()
        };
        let (type_id, prefix) = self.resolved.prefix.get_or_init(|| (TypeId::of::<T>(), digest()));
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
                cargo::warn_once(&format!("encode {}", self.name), &format!("{err}; not caching"))
            })
            .ok()
    }

    /// Reports an event the log asks for: a miss with how long the computation took, a hit
    /// with how long the lookup (and, for a file step, the restore) took.
    pub(crate) fn report(&self, key: &Key, status: Status, took: Duration) {
        if self.log.includes(status) {
            let verb = if status == Status::Miss { "computed" } else { "served" };
            let took = took.as_secs_f64();
            cargo::report(&format!(
                "{} {}: {status}, {verb} in {took:.4}s",
                self.name,
                key.short()
            ));
        }
    }

    /// Appends disk hits and misses to the root's event log, for `cargo memoshelve stats`.
    /// Memory hits (repeats within one process) are not logged: they must stay nanoseconds.
    pub(crate) fn record_event(&self, key: &Key, status: Status) {
        let tier = match status {
            Status::Disk => "disk",
            Status::Remote => "remote",
            Status::Miss => "miss",
            _ => return,
        };
        if let Some(disk) = self.disk() {
            disk.log_event(tier, &self.name, key);
        }
    }

    /// Memory, then disk, then remote. A bad disk entry (corrupt, undecodable, invalid) is
    /// removed.
    pub(crate) fn lookup<T: Cacheable>(&self, key: &Key) -> Option<(T, Status)> {
        if let Some(value) = self.lookup_memory::<T>(key) {
            return Some((value, Status::Memory));
        }
        self.lookup_stored::<T>(key)
    }

    /// The tiers that need I/O: disk, then remote (the async path asks them on a helper thread).
    pub(crate) fn lookup_stored<T: Cacheable>(&self, key: &Key) -> Option<(T, Status)> {
        self.read_stored_tiers(key, false, |disk| self.value_on_disk::<T>(disk, key))
    }

    /// The one read of the tiers below memory, for values and file steps alike: `read` from
    /// the disk tier; on a miss, unless `disk_only`, the remote tier's entry is fetched (checked)
    /// into the disk tier and `read` from there. Nothing from the remote is served directly.
    pub(crate) fn read_stored_tiers<R>(
        &self,
        key: &Key,
        disk_only: bool,
        read: impl Fn(&Disk) -> Option<R>,
    ) -> Option<(R, Status)> {
        let disk = self.disk()?;
        if let Some(found) = read(disk) {
            return Some((found, Status::Disk));
        }
        if disk_only || !crate::tier::remote::fetch(disk, &self.name, key) {
            return None;
        }
        read(disk).map(|found| (found, Status::Remote))
    }

    /// What every store into the disk tier ends with, for values and file steps alike: an
    /// entry `written` is written through to the remote tier; the result is passed on.
    pub(crate) fn written(&self, disk: &Disk, key: &Key, written: Result<()>) -> Result<()> {
        if written.is_ok() {
            crate::tier::remote::write_through(disk, &self.name, key);
        }
        written
    }

    /// The memory tier only: no I/O, so async calls ask it inline.
    /// [`Memo::lookup`], or only the disk tier: what `memoize` asks after waiting for another
    /// process's computation (its result can only be on disk).
    pub(crate) fn lookup_from<T: Cacheable>(
        &self,
        key: &Key,
        disk_only: bool,
    ) -> Option<(T, Status)> {
        if !disk_only && let Some(value) = self.lookup_memory::<T>(key) {
            return Some((value, Status::Memory));
        }
        self.read_stored_tiers(key, disk_only, |disk| self.value_on_disk::<T>(disk, key))
    }

    pub(crate) fn lookup_memory<T: Cacheable>(&self, key: &Key) -> Option<T> {
        let shared = if self.mem_capacity == 0 { None } else { MemoryTier::global().get(key) }?;
        match shared.downcast_ref::<T>() {
            Some(value) if self.is_valid(value) => Some(value.clone()),
            _ => {
                MemoryTier::global().remove(key);
                None
            }
        }
    }

    pub(crate) fn lookup_disk<T: Cacheable>(&self, key: &Key) -> Option<T> {
        self.value_on_disk(self.disk()?, key)
    }

    /// A value of the disk tier, checked, decoded and validated (then also kept in memory).
    fn value_on_disk<T: Cacheable>(&self, disk: &Disk, key: &Key) -> Option<T> {
        let (_, value, bytes) = self.read_entry::<T>(disk, key)?;
        if !self.is_valid(&value) {
            // Failed validation: a miss; the fresh value will replace it.
            let _ = disk.remove(&self.name, key);
            return None;
        }
        self.remember(*key, &value, bytes);
        Some(value)
    }

    /// Reads the entry of `key` from disk, checked and decoded as `V`, with its record and
    /// encoded size, and refreshes its last use. A damaged entry is reported once, removed, and
    /// read as `None`.
    pub(crate) fn read_entry<V: DeserializeOwned + 'static>(
        &self,
        disk: &Disk,
        key: &Key,
    ) -> Option<(EntryRecord, V, u64)> {
        let record = match disk.find_and_touch(&self.name, key) {
            Ok(Some(record)) => record,
            Ok(None) => return None,
            Err(err) => {
                self.discard(disk, key, None, &err);
                return None;
            }
        };
        // A `Vec<u8>`'s length prefix is read apart, so its bytes need no moving afterwards.
        let skip = codec::prefix_len::<V>(record.size);
        let decoded = disk.load_parts(&record, key, skip).and_then(|(head, rest)| {
            let size = (head.len() + rest.len()) as u64;
            let value: V = codec::decode_parts(head, rest).map_err(|err| {
                disk.corrupt(
                    &self.name,
                    key,
                    format!("cannot decode as {}: {err}", type_name::<V>()),
                )
            })?;
            Ok((value, size))
        });
        match decoded {
            Ok((value, bytes)) => Some((record, value, bytes)),
            Err(err) => {
                self.discard(disk, key, Some(&record), &err);
                None
            }
        }
    }

    /// Reports a bad entry once and removes it, so the next call recomputes a healthy one.
    pub(crate) fn discard(
        &self,
        disk: &Disk,
        key: &Key,
        record: Option<&EntryRecord>,
        err: &Error,
    ) {
        if let Error::Corrupt { .. } = err {
            if let Some(record) = record {
                disk.remove_bad_blob(record);
            }
            let _ = disk.remove(&self.name, key);
        }
        cargo::warn_once(
            &format!("read {}", disk.root().display()),
            &format!("{err}; recomputing"),
        );
    }

    fn remember<T: Cacheable>(&self, key: Key, value: &T, bytes: u64) {
        if self.mem_capacity == 0 {
            return;
        }
        let shared: Arc<dyn Any + Send + Sync> = Arc::new(value.clone());
        MemoryTier::global().insert(key, self.namespace.clone(), shared, bytes, self.mem_capacity);
    }

    /// Writes both tiers. Errors are returned; the memoizing calls turn them into a warning.
    fn store<T: Cacheable>(&self, key: Key, value: &T, args: String, took: Duration) -> Result<()> {
        let bytes = codec::encode(value).map_err(|source| Error::Encode {
            what: "value",
            name: self.name.clone(),
            source: source.into(),
        })?;
        self.remember(key, value, bytes.len() as u64);
        let Some(disk) = self.disk() else {
            return Ok(());
        };
        let stored = {
            let _guard = disk.write_guard();
            disk.store(self.record_for(key, type_name::<T>(), args, took), &bytes)
        };
        self.written(disk, &key, stored)
    }

    pub(crate) fn store_or_warn<T: Cacheable>(
        &self,
        key: Key,
        value: &T,
        args: String,
        took: Duration,
    ) {
        if let Err(err) = self.store(key, value, args, took) {
            self.warn_store_failed(&err);
        }
    }

    /// The index record of a new entry (size and hash are filled in by the disk tier).
    pub(crate) fn record_for(
        &self,
        key: Key,
        type_name: &str,
        args: String,
        took: Duration,
    ) -> EntryRecord {
        EntryRecord {
            format: FORMAT_VERSION,
            name: self.name.clone(),
            version: self.version.clone(),
            key: key.to_hex(),
            type_name: type_name.to_owned(),
            created_ms: now_ms(),
            compute_us: took.as_micros() as u64,
            size: 0,
            blake3: String::new(),
            args: truncate(args, ARGS_RENDERING_MAX),
            inputs: self.key_inputs().to_vec(),
            inline: None,
        }
    }

    /// The short rendering of `args` kept in an entry's record.
    pub(crate) fn render_args<A: ?Sized>(&self, args: &A) -> String
    where
        H: ArgsEncoder<A>,
    {
        self.args_encoder.render(args)
    }

    /// One warning per problem when a computed result could not be stored.
    pub(crate) fn warn_store_failed(&self, err: &Error) {
        let topic = match err {
            Error::Uncacheable { .. } => {
                return cargo::warn_once(&format!("uncacheable {}", self.name), &err.to_string());
            }
            Error::Encode { .. } => format!("encode {}", self.name),
            _ => format!("write {}", self.root().unwrap_or_default().display()),
        };
        cargo::warn_once(
            &topic,
            &format!(
                "{err}; the result was computed but not cached \
                 (make the cache root writable, or set MEMOSHELVE_DIR to a writable directory)"
            ),
        );
    }

    /// Returns the cached value for `args`, or runs `compute`, caches its value and returns it.
    /// Never fails because of the cache: a cache problem is one warning and a recomputation.
    pub fn call<A: ?Sized, T: Cacheable>(&self, args: &A, compute: impl FnOnce() -> T) -> T
    where
        H: ArgsEncoder<A>,
    {
        self.call_with_status(args, compute).0
    }

    /// Like [`Memo::call`], and says where the value came from.
    pub fn call_with_status<A: ?Sized, T: Cacheable>(
        &self,
        args: &A,
        compute: impl FnOnce() -> T,
    ) -> (T, Status)
    where
        H: ArgsEncoder<A>,
    {
        match self.compute_through(args, || Ok::<T, std::convert::Infallible>(compute())) {
            Ok(found) => found,
            Err(never) => match never {},
        }
    }

    /// Like [`Memo::call`] for a fallible computation: an `Err` is returned and not cached.
    ///
    /// # Errors
    /// Only the errors of `compute`; cache problems are warnings.
    pub fn try_call<A: ?Sized, T: Cacheable, E>(
        &self,
        args: &A,
        compute: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E>
    where
        H: ArgsEncoder<A>,
    {
        self.compute_through(args, compute).map(|(value, _)| value)
    }

    /// The one lookup-or-compute path behind `call`, `call_with_status` and `try_call`.
    fn compute_through<A: ?Sized, T: Cacheable, E>(
        &self,
        args: &A,
        compute: impl FnOnce() -> Result<T, E>,
    ) -> Result<(T, Status), E>
    where
        H: ArgsEncoder<A>,
    {
        if self.disabled() {
            // Still resolve the declared inputs: their rerun directives must not depend on
            // whether the cache is on, or disabling it would change when cargo reruns.
            self.key_inputs();
            return compute().map(|value| (value, Status::Miss));
        }
        let Some(key) = self.key_of::<A, T>(args) else {
            return compute().map(|value| (value, Status::Miss));
        };
        self.memoize(
            key,
            |disk_only| self.lookup_from::<T>(&key, disk_only),
            compute,
            |value, took| self.store_or_warn(key, value, self.args_encoder.render(args), took),
        )
    }

    /// The lookup-or-compute sequence shared by values and file steps: `lookup(false)` asks
    /// every tier; on a miss without races allowed, the key's lock is taken and `lookup(true)`
    /// asks the disk again (another process may have just computed it); then `compute` runs and
    /// `store` keeps its result. Errors of `compute` are returned and nothing is stored.
    pub(crate) fn memoize<R, E>(
        &self,
        key: Key,
        lookup: impl Fn(bool) -> Option<(R, Status)>,
        compute: impl FnOnce() -> Result<R, E>,
        store: impl FnOnce(&R, Duration),
    ) -> Result<(R, Status), E> {
        // A hit reads the clock only when it is to be reported.
        let started = (self.log != Log::NONE).then(Instant::now);
        // Threads of this process asking for the same missing key compute it once.
        let _leader = loop {
            if let Some((value, status)) = lookup(false) {
                if let Some(disk) = self.disk().filter(|_| crate::memo::audit::due()) {
                    return self.audit(disk, key, value, status, compute, store);
                }
                self.record_event(&key, status);
                if let Some(started) = started {
                    self.report(&key, status, started.elapsed());
                }
                return Ok((value, status));
            }
            if let Some(leader) = crate::memo::flight::lead_or_wait(&key) {
                break leader;
            }
        };
        // One process computes a key at a time when races are not allowed; the others wait,
        // then find its result on disk.
        let lock = self.compute_lock(&key);
        if lock.is_some()
            && let Some((value, status)) = lookup(true)
        {
            self.record_event(&key, status);
            if let Some(started) = started {
                self.report(&key, status, started.elapsed());
            }
            return Ok((value, status));
        }
        let started = Instant::now();
        let value = compute()?;
        let took = started.elapsed();
        self.report(&key, Status::Miss, took);
        self.record_event(&key, Status::Miss);
        store(&value, took);
        drop(lock);
        Ok((value, Status::Miss))
    }

    /// With `allow_race(false)`, waits for and takes the key's cross-process lock (blocking). `None`
    /// when races are allowed, the disk tier is off, or the lock could not be had (warned once).
    pub(crate) fn compute_lock(&self, key: &Key) -> Option<std::fs::File> {
        let disk = self.disk().filter(|_| !self.allow_race)?;
        match disk.lock_key(key, self.lock_timeout) {
            Ok(Some(lock)) => Some(lock),
            Ok(None) => {
                cargo::warn_once(
                    &format!("lock {}", self.name),
                    &format!(
                        "{} {}: waited {}s for another process to compute it; computing here too",
                        self.name,
                        key.short(),
                        self.lock_timeout.as_secs()
                    ),
                );
                None
            }
            Err(err) => {
                cargo::warn_once(
                    &format!("lock {}", disk.root().display()),
                    &format!("{err}; computing unlocked"),
                );
                None
            }
        }
    }

    /// `MEMOSHELVE_AUDIT`: recomputes a hit and compares the stored result (the blake3 of the
    /// encoded value, or of a file step's manifest, which holds every file's hash) with the
    /// fresh one. A mismatch means the computation depends on something not in its key: one
    /// warning names the entry, and the fresh result is kept (returned and stored).
    fn audit<R, E>(
        &self,
        disk: &Disk,
        key: Key,
        cached: R,
        status: Status,
        compute: impl FnOnce() -> Result<R, E>,
        store: impl FnOnce(&R, Duration),
    ) -> Result<(R, Status), E> {
        let stored_hash =
            |disk: &Disk| disk.find(&self.name, &key).ok().flatten().map(|record| record.blake3);
        let Some(before) = stored_hash(disk) else {
            // Only in memory: nothing to compare against.
            return Ok((cached, status));
        };
        let started = Instant::now();
        let fresh = compute()?;
        let took = started.elapsed();
        store(&fresh, took);
        match stored_hash(disk) {
            Some(after) if after != before => {
                cargo::warn_once(
                    &format!("audit {} {key}", self.name),
                    &format!(
                        "audit: {} {} gave a different result when recomputed than the cached \
                         one: it depends on something its key does not cover (declare the input \
                         with input_file/input_glob/env, or bump version); keeping the fresh result",
                        self.name,
                        key.short()
                    ),
                );
                self.record_event(&key, Status::Miss);
                Ok((fresh, Status::Miss))
            }
            _ => {
                self.record_event(&key, status);
                Ok((fresh, status))
            }
        }
    }

    /// A copy of this `Memo` that owns everything and encodes no arguments, for blocking work
    /// moved to another thread. It shares the resolved inputs and the opened disk tier.
    pub(crate) fn detached(&self) -> Memo {
        Memo {
            name: self.name.clone(),
            version: self.version.clone(),
            dir: self.dir.clone(),
            disable: self.disable,
            mem_capacity: self.mem_capacity,
            log: self.log,
            allow_race: self.allow_race,
            lock_timeout: self.lock_timeout,
            validators: self.validators.clone(),
            declared: self.declared.clone(),
            scope: self.scope,
            resolved: self.resolved.clone(),
            args_encoder: PostcardArgs,
            namespace: self.namespace.clone(),
            disk: self.disk.clone(),
        }
    }

    /// Whether the declared inputs and build context are resolved (resolving them may hash files
    /// and run `rustc -vV`, so async calls do it off the executor's thread).
    pub(crate) fn inputs_resolved(&self) -> bool {
        self.resolved.inputs.get().is_some()
    }

    /// The key a call with these arguments and value type `T` uses, or `None` when the
    /// arguments cannot be encoded.
    pub fn key_for<T: 'static, A: ?Sized>(&self, args: &A) -> Option<Key>
    where
        H: ArgsEncoder<A>,
    {
        self.key_of::<A, T>(args)
    }

    /// The cached value for `args`, without computing anything.
    pub fn get<T: Cacheable, A: ?Sized>(&self, args: &A) -> Option<T>
    where
        H: ArgsEncoder<A>,
    {
        self.get_with_status(args).map(|(value, _)| value)
    }

    /// The cached value for `args` and the tier it came from.
    pub fn get_with_status<T: Cacheable, A: ?Sized>(&self, args: &A) -> Option<(T, Status)>
    where
        H: ArgsEncoder<A>,
    {
        if self.disabled() {
            return None;
        }
        let key = self.key_of::<A, T>(args)?;
        let found = self.lookup::<T>(&key)?;
        self.record_event(&key, found.1);
        Some(found)
    }

    /// Whether a value of type `T` is cached for `args` in either tier. It does not read or
    /// check the value: a damaged entry still counts until a read removes it.
    pub fn contains<T: Cacheable, A: ?Sized>(&self, args: &A) -> bool
    where
        H: ArgsEncoder<A>,
    {
        if self.disabled() {
            return false;
        }
        let Some(key) = self.key_of::<A, T>(args) else {
            return false;
        };
        (self.mem_capacity > 0 && MemoryTier::global().contains(&key))
            || self
                .disk()
                .is_some_and(|disk| disk.find(&self.name, &key).is_ok_and(|found| found.is_some()))
    }

    /// Stores `value` as the result for `args` in both tiers.
    ///
    /// # Errors
    /// When the value cannot be encoded or the disk tier cannot be written (the memory tier
    /// keeps it regardless). Does nothing when the cache is disabled.
    pub fn put<T: Cacheable, A: ?Sized>(&self, args: &A, value: &T) -> Result<()>
    where
        H: ArgsEncoder<A>,
    {
        if self.disabled() {
            return Ok(());
        }
        let key = self.try_key::<A, T>(args)?;
        self.store(key, value, self.args_encoder.render(args), Duration::ZERO)
    }

    /// Removes the value of type `T` for `args` from both tiers; returns whether there was one.
    ///
    /// # Errors
    /// When the disk index cannot be written.
    pub fn uncache<T: Cacheable, A: ?Sized>(&self, args: &A) -> Result<bool>
    where
        H: ArgsEncoder<A>,
    {
        if self.disabled() {
            return Ok(false);
        }
        let Some(key) = self.key_of::<A, T>(args) else {
            return Ok(false);
        };
        let in_memory = MemoryTier::global().remove(&key);
        let on_disk = match self.disk() {
            Some(disk) => disk.remove(&self.name, &key)?,
            None => false,
        };
        Ok(in_memory || on_disk)
    }

    /// Keys of this name and version held in the memory tier of this process.
    pub fn mem_keys(&self) -> Vec<Key> {
        let mut keys = MemoryTier::global().keys(&self.namespace);
        keys.sort();
        keys
    }

    /// Keys of this name and version on disk. A listing error is warned about and gives none.
    pub fn disk_keys(&self) -> Vec<Key> {
        let mut keys: Vec<Key> =
            self.disk_records().iter().filter_map(|record| Key::from_hex(&record.key)).collect();
        keys.sort();
        keys
    }

    fn disk_records(&self) -> Vec<EntryRecord> {
        let Some(disk) = self.disk() else {
            return Vec::new();
        };
        match disk.list(Some(&self.name)) {
            Ok(records) => {
                records.into_iter().filter(|record| record.version == self.version).collect()
            }
            Err(err) => {
                cargo::warn_once(&format!("list {}", disk.root().display()), &err.to_string());
                Vec::new()
            }
        }
    }

    /// Keys of this name and version in either tier, sorted, without duplicates.
    pub fn keys(&self) -> Vec<Key> {
        let mut keys = self.mem_keys();
        keys.extend(self.disk_keys());
        keys.sort();
        keys.dedup();
        keys
    }

    /// Every readable `(key, value)` of type `T` under this name and version, from either tier,
    /// sorted by key. Damaged entries are removed and skipped.
    pub fn items<T: Cacheable>(&self) -> Vec<(Key, T)> {
        let mut items: Vec<(Key, T)> = Vec::new();
        for key in self.mem_keys() {
            if let Some(shared) = MemoryTier::global().get(&key)
                && let Some(value) = shared.downcast_ref::<T>()
            {
                items.push((key, value.clone()));
            }
        }
        let type_name = type_name::<T>();
        for record in self.disk_records() {
            let Some(key) = Key::from_hex(&record.key) else { continue };
            if record.type_name != type_name || items.iter().any(|(seen, _)| *seen == key) {
                continue;
            }
            if let Some(value) = self.lookup_disk::<T>(&key) {
                items.push((key, value));
            }
        }
        items.sort_by_key(|(key, _)| *key);
        items
    }

    /// The values of [`Memo::items`].
    pub fn values<T: Cacheable>(&self) -> Vec<T> {
        self.items().into_iter().map(|(_, value)| value).collect()
    }
}

impl<H: Sync> Memo<H> {
    /// Maps `compute` over `items` in parallel, each item memoized under its own key, and
    /// returns the values in the order of `items`. Inside a build script the pool has cargo's
    /// `NUM_JOBS` threads (its `-j`), not one per core.
    pub fn par_map<I, A, T, F>(&self, items: I, compute: F) -> Vec<T>
    where
        I: IntoIterator<Item = A>,
        A: Send + Sync,
        T: Cacheable,
        F: Fn(&A) -> T + Send + Sync,
        H: ArgsEncoder<A>,
    {
        let items: Vec<A> = items.into_iter().collect();
        crate::parallel::map(&items, |item| self.call(item, || compute(item)))
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
