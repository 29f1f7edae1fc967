//! Reading and copying files while hashing them with blake3, at the speed of the copy.
//!
//! Large files go through a two-thread pipeline: a helper thread reads (or copies) the file
//! chunk by chunk while this thread hashes the chunks already done, so the hash costs almost no
//! time of its own and each chunk is hashed while it is still in the CPU cache. Files under
//! [`PIPELINE_MIN`] are read and hashed in one go: a thread costs more than it saves there.

use std::fs;
use std::io::{Read, Seek, Write};
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use crate::parallel::Queue;

/// Files at least this large are pipelined.
pub(crate) const PIPELINE_MIN: u64 = 4 << 20;
/// Files up to this size are hashed from one buffer of their size.
const SMALL_FILE: u64 = 256 << 10;
/// The pipeline's chunk: small enough to be hashed from the cache it was just copied through.
const CHUNK: usize = 1 << 20;

/// The whole of `path` and its blake3 hash.
#[cfg(test)]
pub(crate) fn read_hashed(path: &Path) -> std::io::Result<(Vec<u8>, blake3::Hash)> {
    let (head, rest, hash) = read_hashed_parts(path, 0)?;
    debug_assert!(head.is_empty());
    Ok((rest, hash))
}

/// [`read_hashed`], the first `skip` bytes apart from the rest (a `Vec<u8>` value's length
/// prefix and its bytes): the rest is read straight into its own buffer, where splitting
/// afterwards would move every byte once more (for 64 MiB, a memmove as long as the read). The
/// whole file is hashed either way, and it is opened once (a disk hit of a 1 KiB value opened
/// its blob three times).
pub(crate) fn read_hashed_parts(
    path: &Path,
    skip: usize,
) -> std::io::Result<(Vec<u8>, Vec<u8>, blake3::Hash)> {
    let mut file = fs::File::open(path)?;
    let len = file.metadata()?.len();
    if len >= PIPELINE_MIN
        && (skip as u64) < len
        && let Ok(size) = usize::try_from(len)
    {
        let mut rest = vec![0u8; size - skip];
        huge_pages(&mut rest);
        let threads = crate::parallel::threads();
        let mut head = vec![0u8; skip];
        file.read_exact(&mut head)?;
        // The split reads by position; the pipeline goes on from after the head.
        let hash = match split_hash_skipping(threads, &file, len, Some((&mut rest, skip)), None)? {
            Some(hash) => hash,
            None => {
                let mut hasher = blake3::Hasher::new();
                hasher.update(&head);
                pipeline(hasher, &mut rest, |chunk| (&file).read_exact(chunk))?
            }
        };
        // A file that changed length while it was read is not what was recorded: read it
        // again as it is now, below, and let the caller's size check see the difference.
        if file.metadata()?.len() == len {
            return Ok((head, rest, hash));
        }
        file.rewind()?;
    }
    let mut head = Vec::new();
    if (skip as u64) <= len {
        head = vec![0u8; skip];
        file.read_exact(&mut head)?;
    }
    let rest = read_rest(&mut file, len.saturating_sub(head.len() as u64))?;
    let mut hasher = blake3::Hasher::new();
    hasher.update(&head);
    hasher.update(&rest);
    let hash = hasher.finalize();
    if head.len() < skip {
        // Shorter than its own prefix: split what there is, as the caller expects.
        let mut all = rest;
        let rest = all.split_off(skip.min(all.len()));
        return Ok((all, rest, hash));
    }
    Ok((head, rest, hash))
}

/// The rest of `file`, expected to be `len` bytes: read into a buffer of that size, nothing
/// zeroed first, with one more read to see the end (`File::read_to_end` adds an fstat and an
/// lseek for its size hint). A file longer than expected is read to its end all the same.
fn read_rest(file: &mut fs::File, len: u64) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(usize::try_from(len).unwrap_or(0).saturating_add(1));
    (&mut *file).take(len.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > len {
        file.read_to_end(&mut bytes)?;
    }
    Ok(bytes)
}

/// Copies `from` to the new file `to` and returns the number of bytes and their blake3 hash
/// (of the bytes as they were read, which are the bytes written).
pub(crate) fn copy_hashed(from: &Path, to: &Path) -> std::io::Result<(u64, blake3::Hash)> {
    let source = fs::File::open(from)?;
    let mut sink = fs::File::create(to)?;
    let len = source.metadata()?.len();
    if len >= PIPELINE_MIN
        && let Some(hash) = split_hash(&source, len, None, Some(&sink))?
    {
        return Ok((len, hash));
    }
    let mut hasher = blake3::Hasher::new();
    let mut written = 0u64;
    stream(source, |chunk| {
        hasher.update(chunk);
        written += chunk.len() as u64;
        sink.write_all(chunk)
    })?;
    Ok((written, hasher.finalize()))
}

/// The blake3 hash of a file's content.
pub(crate) fn hash_file(path: &Path) -> std::io::Result<blake3::Hash> {
    let mut file = fs::File::open(path)?;
    let len = file.metadata()?.len();
    if len >= PIPELINE_MIN
        && let Some(hash) = split_hash(&file, len, None, None)?
    {
        return Ok(hash);
    }
    if len <= SMALL_FILE {
        // One read into a buffer of the file's size (and one more to see the end): a declared
        // input set is often a thousand small files, where a 64 KiB buffer to zero, a second
        // fstat and a streaming loop per file were a third of the work.
        return Ok(blake3::hash(&read_rest(&mut file, len)?));
    }
    let mut hasher = blake3::Hasher::new();
    stream(file, |chunk| {
        hasher.update(chunk);
        Ok(())
    })?;
    Ok(hasher.finalize())
}

/// The blake3 hash of the first `len` bytes of `file`, computed as blake3's own tree allows:
/// split where the left subtree ends, each part read with positioned reads and hashed on a
/// thread of its own (splitting again while there are threads), the parts' chaining values
/// merged. `keep` receives the bytes. `None` where this cannot run (one thread, not Unix).
fn split_hash(
    file: &fs::File,
    len: u64,
    keep: Option<&mut [u8]>,
    sink: Option<&fs::File>,
) -> std::io::Result<Option<blake3::Hash>> {
    split_hash_on(crate::parallel::threads(), file, len, keep, sink)
}

/// [`split_hash`] as if `threads` threads were there to use.
pub(crate) fn split_hash_on(
    threads: usize,
    file: &fs::File,
    len: u64,
    keep: Option<&mut [u8]>,
    sink: Option<&fs::File>,
) -> std::io::Result<Option<blake3::Hash>> {
    split_hash_skipping(threads, file, len, keep.map(|bytes| (bytes, 0)), sink)
}

/// [`split_hash_on`] keeping the bytes after the first `skip` (`keep` is `len - skip` long):
/// all of the file is hashed, and nothing has to be moved down afterwards.
pub(crate) fn split_hash_skipping(
    threads: usize,
    file: &fs::File,
    len: u64,
    keep: Option<(&mut [u8], usize)>,
    sink: Option<&fs::File>,
) -> std::io::Result<Option<blake3::Hash>> {
    use blake3::hazmat::{Mode, merge_subtrees_root};
    let skip = keep.as_ref().map_or(0, |(_, skip)| *skip);
    if !cfg!(unix) || threads < 2 || len <= blake3::CHUNK_LEN as u64 || skip >= CHUNK {
        return Ok(None);
    }
    let depth = usize::BITS - (threads - 1).leading_zeros(); // 2 threads: 1, 3-4: 2, ...
    let (left, right) = halves(file, 0, len, keep, sink, depth - 1);
    Ok(Some(merge_subtrees_root(&left?, &right?, Mode::Hash)))
}

/// The chaining values of the two halves of the subtree of `len` bytes at `offset` (split
/// where blake3's left subtree ends), each hashed on a thread of its own.
fn halves(
    file: &fs::File,
    offset: u64,
    len: u64,
    keep: Option<(&mut [u8], usize)>,
    sink: Option<&fs::File>,
    depth: u32,
) -> (std::io::Result<blake3::hazmat::ChainingValue>, std::io::Result<blake3::hazmat::ChainingValue>)
{
    let left_len = blake3::hazmat::left_subtree_len(len);
    // `keep` holds this subtree's bytes after its first `skip` (less than a chunk, so only
    // ever of the leftmost subtree).
    let (left_keep, right_keep) = match keep {
        Some((bytes, skip)) => {
            let (left, right) = bytes.split_at_mut(left_len as usize - skip);
            (Some((left, skip)), Some((right, 0)))
        }
        None => (None, None),
    };
    crate::parallel::join(
        || subtree(file, offset, left_len, left_keep, sink, depth),
        || subtree(file, offset + left_len, len - left_len, right_keep, sink, depth),
    )
}

/// The chaining value of the subtree of `len` bytes at `offset` (a valid blake3 subtree),
/// split further on `depth` more levels of threads.
fn subtree(
    file: &fs::File,
    offset: u64,
    len: u64,
    keep: Option<(&mut [u8], usize)>,
    sink: Option<&fs::File>,
    depth: u32,
) -> std::io::Result<blake3::hazmat::ChainingValue> {
    use blake3::hazmat::{HasherExt as _, Mode, merge_subtrees_non_root};
    if depth > 0 && len > PIPELINE_MIN {
        let (left, right) = halves(file, offset, len, keep, sink, depth - 1);
        return Ok(merge_subtrees_non_root(&left?, &right?, Mode::Hash));
    }
    let mut hasher = blake3::Hasher::new();
    hasher.set_input_offset(offset);
    let mut scratch = Vec::new();
    let mut done = 0u64;
    let (mut keep, skip) = match keep {
        Some((bytes, skip)) => (Some(bytes), skip as u64),
        None => (None, 0),
    };
    while done < len {
        let take = (len - done).min(CHUNK as u64) as usize;
        let buffer: &mut [u8] = match keep.as_deref_mut() {
            // Whole chunks past the skipped bytes go straight where they are kept.
            Some(bytes) if done >= skip => {
                let at = (done - skip) as usize;
                &mut bytes[at..at + take]
            }
            _ => {
                if scratch.len() < take {
                    // `vec!` of zeros is one calloc; `resize` writes each byte, which at
                    // opt-level 0 is a loop of calls over the whole chunk.
                    scratch = vec![0u8; CHUNK];
                }
                &mut scratch[..take]
            }
        };
        read_exact_at(file, buffer, offset + done)?;
        hasher.update(buffer);
        if let Some(sink) = sink {
            write_all_at(sink, buffer, offset + done)?;
        }
        if done < skip
            && let Some(bytes) = keep.as_deref_mut()
        {
            // The first chunk, read whole for the hash: keep what follows the skipped bytes.
            let kept = take - skip as usize;
            bytes[..kept].copy_from_slice(&scratch[skip as usize..take]);
        }
        done += take as u64;
    }
    Ok(hasher.finalize_non_root())
}

#[cfg(unix)]
fn read_exact_at(file: &fs::File, buffer: &mut [u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buffer, offset)
}

#[cfg(unix)]
fn write_all_at(file: &fs::File, buffer: &[u8], offset: u64) -> std::io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, buffer, offset)
}

#[cfg(not(unix))]
fn write_all_at(_: &fs::File, _: &[u8], _: u64) -> std::io::Result<()> {
    unreachable!("split_hash runs on Unix only")
}

#[cfg(not(unix))]
fn read_exact_at(_: &fs::File, _: &mut [u8], _: u64) -> std::io::Result<()> {
    unreachable!("split_hash runs on Unix only")
}

/// Feeds the content of `file` to `consume` chunk by chunk. For a large file a helper thread
/// reads ahead: buffers travel in a ring of three, read there, consumed here, handed back.
pub(crate) fn stream(
    mut file: fs::File,
    mut consume: impl FnMut(&[u8]) -> std::io::Result<()>,
) -> std::io::Result<()> {
    if file.metadata()?.len() < PIPELINE_MIN {
        let mut buffer = vec![0u8; 64 << 10];
        loop {
            let read = read_full(&mut file, &mut buffer)?;
            if read == 0 {
                return Ok(());
            }
            consume(&buffer[..read])?;
        }
    }
    // The ring: empty buffers go to the reader, full ones (or the error) come back; an empty
    // buffer is the end of the file.
    let full: Queue<std::io::Result<Vec<u8>>> = Queue::new();
    let empty: Queue<Vec<u8>> = Queue::new();
    for _ in 0..3 {
        // Zeroed by calloc once: `resize` below then only changes the length (at opt-level 0
        // growing by `resize` writes byte by byte).
        empty.push(vec![0u8; CHUNK]);
    }
    let file = Mutex::new(file);
    let reader = || {
        let _closer = full.closer();
        let mut file = file.lock().unwrap_or_else(PoisonError::into_inner);
        while let Some(mut buffer) = empty.pop() {
            buffer.resize(CHUNK, 0);
            let read = read_full(&mut file, &mut buffer).map(|read| {
                buffer.truncate(read);
                buffer
            });
            let last = !matches!(&read, Ok(buffer) if !buffer.is_empty());
            if !full.push(read) || last {
                return;
            }
        }
    };
    beside_reader(&reader, &mut || {
        // However this side stops, early or not, the reader stops too before the threads are
        // waited for.
        let (_closes_full, _closes_empty) = (full.closer(), empty.closer());
        while let Some(chunk) = full.pop() {
            let chunk = chunk?;
            if chunk.is_empty() {
                break;
            }
            consume(&chunk)?;
            empty.push(chunk);
        }
        Ok(())
    })
}

/// Hashes `bytes` (a buffer the helper thread fills chunk by chunk with `fill`) as it fills,
/// after what `hasher` has had already.
fn pipeline(
    mut hasher: blake3::Hasher,
    bytes: &mut [u8],
    fill: impl FnMut(&mut [u8]) -> std::io::Result<()> + Send,
) -> std::io::Result<blake3::Hash> {
    let filled: Queue<std::io::Result<&[u8]>> = Queue::new();
    let work = Mutex::new((bytes.chunks_mut(CHUNK), fill));
    let reader = || {
        let _closer = filled.closer();
        let mut work = work.lock().unwrap_or_else(PoisonError::into_inner);
        let (chunks, fill) = &mut *work;
        for chunk in chunks {
            let result = fill(chunk).map(|()| &*chunk);
            let failed = result.is_err();
            if !filled.push(result) || failed {
                return;
            }
        }
    };
    beside_reader(&reader, &mut || {
        let _closer = filled.closer();
        while let Some(chunk) = filled.pop() {
            hasher.update(chunk?);
        }
        Ok(())
    })?;
    Ok(hasher.finalize())
}

/// Runs `reader` on a thread of its own and `consume` on this one (which must close the queues
/// between them on its way out, so that the reader stops); `consume`'s outcome.
fn beside_reader(
    reader: &(dyn Fn() + Sync),
    consume: &mut dyn FnMut() -> std::io::Result<()>,
) -> std::io::Result<()> {
    let mut outcome = Ok(());
    crate::parallel::run_threads(1, reader, &mut |started| {
        outcome = if started == 0 {
            Err(std::io::Error::other("cannot start a reading thread"))
        } else {
            consume()
        };
    });
    outcome
}

/// Reads until `buffer` is full or the file ends; the count read.
fn read_full(file: &mut fs::File, buffer: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match file.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    Ok(filled)
}

/// Asks Linux to back the 2 MiB-aligned part of `buffer` (fresh from calloc, not yet touched)
/// with transparent huge pages where they are enabled on request (`madvise`, the usual
/// default). Reading 64 MiB into 4 KiB pages takes 16,384 page faults, each charged, listed and
/// zeroed apart, which cost as much as the read and the hash together; into huge pages, 32.
/// Only advice: where it is refused, nothing changes. (The advice's number, 14, is the one of
/// the generic Linux ABI, which these architectures use.)
#[cfg(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "riscv64")
))]
pub(crate) fn huge_pages(buffer: &mut [u8]) {
    const MADV_HUGEPAGE: i32 = 14;
    unsafe extern "C" {
        fn madvise(addr: *mut std::ffi::c_void, len: usize, advice: i32) -> i32;
    }
    if let Some((offset, len)) = huge_range(buffer.as_ptr() as usize, buffer.len()) {
        // SAFETY: the range lies inside `buffer`, borrowed mutably here; the advice changes
        // how its pages are backed, never their content.
        let _ = unsafe { madvise(buffer[offset..].as_mut_ptr().cast(), len, MADV_HUGEPAGE) };
    }
}

#[cfg(not(all(
    target_os = "linux",
    any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "riscv64")
)))]
pub(crate) fn huge_pages(_: &mut [u8]) {}

/// The whole 2 MiB pages inside `len` bytes at address `start`: their offset from `start`
/// and their total length, or `None` where there is not one.
pub(crate) fn huge_range(start: usize, len: usize) -> Option<(usize, usize)> {
    const HUGE: usize = 2 << 20;
    let first = start.checked_next_multiple_of(HUGE)?;
    let end = start.checked_add(len)? / HUGE * HUGE;
    (end > first).then(|| (first - start, end - first))
}

#[cfg(test)]
mod tests {

    #[test]
    fn split_hashing_is_blake3_of_the_whole() {
        use super::{PIPELINE_MIN, hash_file, read_hashed, split_hash_on};
        let dir = tempfile::tempdir().unwrap();
        // Small files are hashed from one buffer of their size.
        for len in [0, 1, 10 << 10, (256 << 10) - 1, 256 << 10, (256 << 10) + 1, 1 << 20] {
            let bytes: Vec<u8> = (0..len).map(|index| (index * 7 % 251) as u8).collect();
            let path = dir.path().join(format!("small-{len}.bin"));
            std::fs::write(&path, &bytes).unwrap();
            assert_eq!(hash_file(&path).unwrap(), blake3::hash(&bytes), "hash_file, {len} bytes");
        }
        let min = PIPELINE_MIN as usize;
        for len in [min - 1, min, min + 1, 3 * min + 1024, 5 * min - 777, 9 << 20] {
            let bytes: Vec<u8> = (0..len).map(|index| (index * 31 % 253) as u8).collect();
            let path = dir.path().join(format!("{len}.bin"));
            std::fs::write(&path, &bytes).unwrap();
            let expected = blake3::hash(&bytes);
            assert_eq!(hash_file(&path).unwrap(), expected, "hash_file, {len} bytes");
            let copied = dir.path().join(format!("{len}.copied"));
            let (written, hash) = super::copy_hashed(&path, &copied).unwrap();
            assert_eq!((written, hash), (len as u64, expected), "copy_hashed, {len} bytes");
            assert!(std::fs::read(&copied).unwrap() == bytes, "copy_hashed copies, {len} bytes");
            let (read, hash) = read_hashed(&path).unwrap();
            assert_eq!(hash, expected, "read_hashed, {len} bytes");
            assert!(read == bytes, "read_hashed returns the bytes, {len} bytes");
            let file = std::fs::File::open(&path).unwrap();
            for threads in [2, 3, 4, 8] {
                let mut kept = vec![0u8; len];
                let split =
                    split_hash_on(threads, &file, len as u64, Some(&mut kept), None).unwrap();
                assert_eq!(split, Some(expected), "{threads} threads, {len} bytes, kept");
                assert!(kept == bytes, "{threads} threads, {len} bytes: the bytes kept");
                let copy = dir.path().join(format!("{len}-{threads}.copy"));
                let sink = std::fs::File::create(&copy).unwrap();
                let split = split_hash_on(threads, &file, len as u64, None, Some(&sink)).unwrap();
                assert_eq!(split, Some(expected), "{threads} threads, {len} bytes");
                assert!(
                    std::fs::read(&copy).unwrap() == bytes,
                    "{threads} threads, {len} bytes: copy"
                );
                for skip in [1, 3, 10] {
                    let mut rest = vec![0u8; len - skip];
                    let split = super::split_hash_skipping(
                        threads,
                        &file,
                        len as u64,
                        Some((&mut rest, skip)),
                        None,
                    )
                    .unwrap();
                    assert_eq!(
                        split,
                        Some(expected),
                        "{threads} threads, {len} bytes, skip {skip}"
                    );
                    assert!(
                        rest == bytes[skip..],
                        "{threads} threads, {len} bytes: kept after {skip}"
                    );
                }
            }
            for skip in [0, 1, 9] {
                let (head, rest, hash) = super::read_hashed_parts(&path, skip).unwrap();
                assert_eq!(hash, expected, "read_hashed_parts, {len} bytes, skip {skip}");
                assert!(
                    head == bytes[..skip] && rest == bytes[skip..],
                    "parts, {len} bytes, {skip}"
                );
                // On the threads of a parallel map there is one thread each: the pipeline instead.
                for (head, rest, hash) in crate::parallel::map(&[(); 2], |()| {
                    super::read_hashed_parts(&path, skip).unwrap()
                }) {
                    assert_eq!(hash, expected, "one thread, {len} bytes, skip {skip}");
                    assert!(
                        head == bytes[..skip] && rest == bytes[skip..],
                        "one thread, {len}, {skip}"
                    );
                }
            }
        }
        // Small files, read whole in one go, the prefix apart; a file shorter than its prefix.
        for len in [0usize, 1, 5, 1024, 1025, 300_000] {
            let bytes: Vec<u8> = (0..len).map(|index| (index * 13 % 241) as u8).collect();
            let path = dir.path().join(format!("parts-{len}.bin"));
            std::fs::write(&path, &bytes).unwrap();
            for skip in [0, 1, 3, 9] {
                let (head, rest, hash) = super::read_hashed_parts(&path, skip).unwrap();
                assert_eq!(hash, blake3::hash(&bytes), "{len} bytes, skip {skip}");
                let cut = skip.min(len);
                assert!(head == bytes[..cut] && rest == bytes[cut..], "{len} bytes, skip {skip}");
            }
        }
    }

    /// A large file streamed through the reading thread comes whole and in order; a consumer that
    /// stops early gets its error back and the reader stops (with it left running, this hangs).
    /// The same on the threads of a parallel map, where `hash_file` and `copy_hashed` stream.
    #[test]
    fn a_streamed_read_is_whole_and_one_that_stops_early_stops_its_reader() {
        use super::{PIPELINE_MIN, stream};
        let dir = tempfile::tempdir().unwrap();
        let len = 3 * PIPELINE_MIN as usize + 12_345;
        let bytes: Vec<u8> = (0..len).map(|index| (index * 17 % 239) as u8).collect();
        let path = dir.path().join("large.bin");
        std::fs::write(&path, &bytes).unwrap();
        let mut read = Vec::new();
        stream(std::fs::File::open(&path).unwrap(), |chunk| {
            read.extend_from_slice(chunk);
            Ok(())
        })
        .unwrap();
        assert!(read == bytes, "streamed bytes differ");
        let mut calls = 0;
        let stopped = stream(std::fs::File::open(&path).unwrap(), |_| {
            calls += 1;
            if calls == 2 { Err(std::io::Error::other("enough")) } else { Ok(()) }
        });
        assert_eq!(stopped.unwrap_err().to_string(), "enough");
        assert_eq!(calls, 2);
        let expected = blake3::hash(&bytes);
        for (index, (hash, copied)) in crate::parallel::map(&[0, 1], |index| {
            let copy = dir.path().join(format!("copy-{index}"));
            let hash = super::hash_file(&path).unwrap();
            (hash, super::copy_hashed(&path, &copy).unwrap())
        })
        .into_iter()
        .enumerate()
        {
            assert_eq!((hash, copied), (expected, (len as u64, expected)), "thread {index}");
            let copy = std::fs::read(dir.path().join(format!("copy-{index}"))).unwrap();
            assert!(copy == bytes, "copy {index} differs");
        }
    }

    /// The part of a buffer advised to take huge pages is exactly its whole 2 MiB pages.
    #[test]
    fn huge_range_is_the_whole_huge_pages_inside() {
        use super::huge_range;
        const HUGE: usize = 2 << 20;
        assert_eq!(huge_range(HUGE, 3 * HUGE), Some((0, 3 * HUGE)));
        assert_eq!(huge_range(HUGE + 16, 3 * HUGE), Some((HUGE - 16, 2 * HUGE)));
        assert_eq!(huge_range(HUGE - 1, HUGE + 1), Some((1, HUGE)));
        assert_eq!(huge_range(HUGE - 1, HUGE), None);
        assert_eq!(huge_range(HUGE + 1, HUGE), None);
        assert_eq!(huge_range(16, 100), None);
        assert_eq!(huge_range(usize::MAX - 10, 5), None);
        assert_eq!(huge_range(HUGE, usize::MAX), None);
    }

    /// Where Linux gives huge pages on request, a buffer advised by `huge_pages` is marked for
    /// them (the `hg` flag of its mapping in /proc/self/smaps: the advice itself; whether the
    /// kernel then finds free huge pages depends on the machine's memory, so AnonHugePages would
    /// make a flaky test), and its content is whatever is written to it.
    #[cfg(all(
        target_os = "linux",
        any(target_arch = "x86_64", target_arch = "aarch64", target_arch = "riscv64")
    ))]
    #[test]
    fn advised_buffers_are_backed_by_huge_pages() {
        let enabled = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled");
        let mut buffer = vec![0u8; 8 << 20];
        super::huge_pages(&mut buffer);
        for (index, byte) in buffer.iter_mut().enumerate() {
            *byte = (index % 251) as u8;
        }
        assert!(buffer.iter().enumerate().all(|(index, byte)| *byte == (index % 251) as u8));
        if !enabled.is_ok_and(|modes| modes.contains("[madvise]") || modes.contains("[always]")) {
            return; // huge pages off on this machine: the advice is refused, nothing to see
        }
        let address = buffer.as_ptr() as usize + (2 << 20);
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        let mut flags = None;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ')
                && let Some((from, to)) = range.split_once('-')
                && let (Ok(from), Ok(to)) =
                    (usize::from_str_radix(from, 16), usize::from_str_radix(to, 16))
            {
                inside = (from..to).contains(&address);
            } else if inside && let Some(listed) = line.strip_prefix("VmFlags:") {
                flags = Some(listed.split_whitespace().map(str::to_owned).collect::<Vec<_>>());
            }
        }
        let flags = flags.expect("the buffer's mapping and its VmFlags in /proc/self/smaps");
        assert!(flags.iter().any(|flag| flag == "hg"), "not advised for huge pages: {flags:?}");
    }
}
