//! `#[memoize]`: computes once, then memory, then disk; ignored parameters, names, versions,
//! errors, patterns and generics.

use std::path::Path;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicUsize, Ordering};

use memoshelve_build::{Status, memoize};
use serde::{Deserialize, Serialize};

/// The cache root of every `#[memoize]` function in this binary: `dir = ..` is evaluated once.
pub(crate) fn root() -> &'static Path {
    static ROOT: LazyLock<tempfile::TempDir> =
        LazyLock::new(|| tempfile::tempdir().expect("a temp dir"));
    ROOT.path()
}

static SQUARES: AtomicUsize = AtomicUsize::new(0);

#[memoize(dir = root())]
fn square(n: u64) -> u64 {
    SQUARES.fetch_add(1, Ordering::SeqCst);
    n * n
}

#[test]
fn a_memoized_function_computes_once_then_hits_memory_then_disk() {
    assert_eq!(square(12), 144);
    assert_eq!(square(12), 144);
    assert_eq!(SQUARES.load(Ordering::SeqCst), 1);
    assert_eq!(square(13), 169);
    assert_eq!(SQUARES.load(Ordering::SeqCst), 2);

    // The companion is the cache behind it: arguments are the parameters in a tuple.
    let memo = square_memo();
    assert!(memo.contains::<u64, _>(&(12u64,)));
    assert_eq!(memo.call_with_status(&(12u64,), || unreachable!()), (144u64, Status::Memory));
    // The same cache without its memory tier reads the disk.
    let cold = memo.clone().mem_capacity(0);
    assert_eq!(cold.call_with_status(&(12u64,), || unreachable!()), (144u64, Status::Disk));
    let key = memo.key_for::<u64, _>(&(12u64,)).unwrap();
    assert!(memo.disk_keys().contains(&key));
    // Uncached, it computes again.
    assert!(memo.uncache::<u64, _>(&(12u64,)).unwrap());
    assert_eq!(square(12), 144);
    assert_eq!(SQUARES.load(Ordering::SeqCst), 3);
}

/// Not `Serialize`: an ignored parameter need not be.
struct Progress;

static HALVES: AtomicUsize = AtomicUsize::new(0);

#[memoize(dir = root(), ignore(verbose, progress))]
fn halve(n: u64, verbose: bool, progress: &Progress) -> u64 {
    let _ = (verbose, progress);
    HALVES.fetch_add(1, Ordering::SeqCst);
    n / 2
}

#[test]
fn ignored_parameters_do_not_change_the_key() {
    assert_eq!(halve(10, false, &Progress), 5);
    assert_eq!(halve(10, true, &Progress), 5);
    assert_eq!(HALVES.load(Ordering::SeqCst), 1);
    assert_eq!(halve(12, true, &Progress), 6);
    assert_eq!(HALVES.load(Ordering::SeqCst), 2);
    // The key holds only `n`.
    assert!(halve_memo().contains::<u64, _>(&(10u64,)));
}

struct Grid;
struct Board;

impl Grid {
    const SIDE: u32 = 4;

    #[memoize(dir = root())]
    fn cells(rows: u32) -> u32 {
        rows * Self::SIDE
    }
}

impl Board {
    const SIDE: u32 = 5;

    #[memoize(dir = root())]
    fn cells(rows: u32) -> u32 {
        rows * Self::SIDE
    }
}

#[test]
fn the_default_name_is_the_function_path_and_tells_impls_apart() {
    assert_eq!(square_memo().name(), "it::memoize::square");
    assert_eq!(Grid::cells_memo().name(), "it::memoize::Grid::cells");
    assert_eq!(Board::cells_memo().name(), "it::memoize::Board::cells");
    // Same tokens, same arguments, same value type: only the name keeps them apart.
    assert_eq!(Grid::cells(3), 12);
    assert_eq!(Board::cells(3), 15);
    assert_eq!(Grid::cells(3), 12);
}

#[memoize(name = "it-memoize-named", version = "7", dir = root(), log = "misses", allow_race = false)]
fn named(text: &str) -> usize {
    text.len()
}

#[test]
fn name_and_version_options_reach_the_memo() {
    assert_eq!(named("four"), 4);
    let memo = named_memo();
    assert_eq!(memo.name(), "it-memoize-named");
    // The version salt is the given version plus the hash of the function's tokens.
    let debug = format!("{memo:?}");
    let salt = debug.split("version: \"").nth(1).unwrap().split('"').next().unwrap();
    let (version, source) = salt.split_once("+src.").unwrap();
    assert_eq!(version, "7");
    assert_eq!(source.len(), 16);
    assert!(source.bytes().all(|byte| byte.is_ascii_hexdigit()));
    assert!(memo.contains::<usize, _>(&("four",)));
    // Without a version option the salt is the source hash alone.
    assert!(format!("{:?}", square_memo()).contains("version: \"src."));
}

static DISABLED_RUNS: AtomicUsize = AtomicUsize::new(0);

#[memoize(dir = root(), disable)]
fn disabled(n: u8) -> u8 {
    DISABLED_RUNS.fetch_add(1, Ordering::SeqCst);
    n
}

#[test]
fn disable_bypasses_both_tiers() {
    assert_eq!(disabled(1), 1);
    assert_eq!(disabled(1), 1);
    assert_eq!(DISABLED_RUNS.load(Ordering::SeqCst), 2);
    assert!(!disabled_memo().contains::<u8, _>(&(1u8,)));
}

static PARSES: AtomicUsize = AtomicUsize::new(0);

#[memoize(dir = root())]
fn parse(text: String) -> Result<u32, std::num::ParseIntError> {
    PARSES.fetch_add(1, Ordering::SeqCst);
    let value: u32 = text.trim().parse()?;
    if value == 0 {
        return Ok(1);
    }
    Ok(value)
}

#[test]
fn errors_are_returned_and_not_cached() {
    assert!(parse("x".to_owned()).is_err());
    assert!(parse("x".to_owned()).is_err());
    assert_eq!(PARSES.load(Ordering::SeqCst), 2);
    assert_eq!(parse(" 5 ".to_owned()), Ok(5));
    assert_eq!(parse(" 5 ".to_owned()), Ok(5));
    assert_eq!(parse("0".to_owned()), Ok(1));
    assert_eq!(PARSES.load(Ordering::SeqCst), 4);
    // The value type of a `Result` function is its `Ok` type.
    assert!(parse_memo().contains::<u32, _>(&(" 5 ".to_owned(),)));
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Span {
    start: u32,
    end: u32,
}

static PATTERNS: AtomicUsize = AtomicUsize::new(0);

#[memoize(dir = root())]
fn patterns((a, b): (u32, u32), mut extra: u32, Span { start, end }: Span) -> Vec<u32> {
    PATTERNS.fetch_add(1, Ordering::SeqCst);
    extra += 1;
    vec![a, b, extra, start, end]
}

#[memoize(dir = root())]
fn repeat<T: Serialize + serde::de::DeserializeOwned + Clone + Send + Sync + 'static>(
    item: T,
    times: usize,
) -> Vec<T> {
    vec![item; times]
}

#[test]
fn patterns_and_generics_work_as_in_the_plain_function() {
    let span = Span { start: 3, end: 9 };
    assert_eq!(patterns((1, 2), 4, span.clone()), [1, 2, 5, 3, 9]);
    assert_eq!(patterns((1, 2), 4, span.clone()), [1, 2, 5, 3, 9]);
    assert_eq!(PATTERNS.load(Ordering::SeqCst), 1);
    assert!(patterns_memo().contains::<Vec<u32>, _>(&((1u32, 2u32), 4u32, span)));
    assert_eq!(repeat("ab".to_owned(), 2), ["ab", "ab"]);
    assert_eq!(repeat(7u8, 3), [7, 7, 7]);
    assert!(repeat_memo().contains::<Vec<u8>, _>(&(7u8, 3usize)));
}
