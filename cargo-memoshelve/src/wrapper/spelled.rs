//! Whether a binary file spells a directory only in debug information or also where a program
//! may use it at run time (DESIGN.md section 9, hermetic runs).
//!
//! A hermetic run's binary files keep spelling the sandbox, which is removed after the run.
//! In debug information that is harmless (a debugger's source path). Compiled in as data it is
//! not: openssl-src's `libcrypto.a` has its `ENGINESDIR` and `MODULESDIR` (below `OUT_DIR`) in
//! `.rodata`, where the built program looks for engines and providers (measured: its other
//! binaries, and jemalloc's and libgit2's, spell `OUT_DIR` in debug information only).
//! [`spellings_outside_debug_info`] tells the two apart by the file's structure: an ELF
//! object or shared library by its sections, an `ar` archive member by member. Any other file
//! that spells the directory counts, and so does one whose structure cannot be read.

use std::fmt;
use std::ops::Range;

use memchr::memmem;

/// Whether `needle` (a directory's spelling) occurs in `bytes` (a file's contents) anywhere
/// other than in debug information; an empty `needle` never does.
///
/// In an ELF file, occurrences in `.debug_*`, `.zdebug_*`, `.gnu.debuglto_*`, compressed
/// sections, `.comment`, `.note*`, `.symtab`, `.strtab` and debug relocations do not count;
/// any other section (`.rodata`, `.data`, `.dynstr` with a run path...) and bytes outside every
/// section do. An `ar` archive is judged member by member, its symbol and name tables left out.
#[cfg(test)]
pub(crate) fn spelled_outside_debug_info(bytes: &[u8], needle: &[u8]) -> bool {
    !spellings_outside_debug_info(bytes, needle).is_empty()
}

/// Where a file spells a directory outside debug information (for messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Spelling {
    /// The archive member, for an `ar` archive.
    pub(crate) member: Option<String>,
    /// The ELF section; `None` outside every section, or in a file that is not ELF.
    pub(crate) section: Option<String>,
    /// The path spelled: the directory and what follows it up to a NUL, a quote, white space,
    /// `:` or `;` (at most 4 KiB), such as `<OUT_DIR>/openssl-build/install/lib/engines-3`.
    /// Whether that path exists in the run's output tells a compiled-in data directory from
    /// one that plain cargo's build names in vain too.
    pub(crate) path: String,
}

impl fmt::Display for Spelling {
    /// `(member.o) .rodata`, as a suffix to the file's name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(member) = &self.member {
            write!(f, "({member}) ")?;
        }
        match &self.section {
            Some(section) => f.write_str(section),
            None => f.write_str("outside ELF sections"),
        }
    }
}

/// Each place (member, section and path, once each) where `needle` occurs in `bytes` outside
/// debug information, in file order; see [`spelled_outside_debug_info`].
pub(crate) fn spellings_outside_debug_info(bytes: &[u8], needle: &[u8]) -> Vec<Spelling> {
    let mut found = Vec::new();
    if needle.is_empty() || memmem::find(bytes, needle).is_none() {
        return found;
    }
    match archive_members(bytes) {
        Some(members) => {
            for (name, body) in members {
                judge(body, needle, Some(&name), &mut found);
            }
        }
        None => judge(bytes, needle, None, &mut found),
    }
    found
}

/// Adds to `found` where `needle` occurs in `bytes`, one file or archive member, outside
/// debug information.
fn judge(bytes: &[u8], needle: &[u8], member: Option<&str>, found: &mut Vec<Spelling>) {
    let mut starts = memmem::find_iter(bytes, needle).peekable();
    if starts.peek().is_none() {
        return;
    }
    let sections = elf_sections(bytes);
    for start in starts {
        let span = start..start + needle.len();
        let section = match &sections {
            Some(sections) => {
                let holding: Vec<&Section> = sections
                    .iter()
                    .filter(|section| {
                        section.range.start <= span.start && span.end <= section.range.end
                    })
                    .collect();
                if !holding.is_empty() && holding.iter().all(|section| section.debug) {
                    continue;
                }
                holding.iter().find(|section| !section.debug).map(|section| section.name.clone())
            }
            None => None,
        };
        let rest = &bytes[start..bytes.len().min(start + 4096)];
        let end = rest[needle.len()..]
            .iter()
            .position(|byte| b"\0\"'`:; \t\r\n".contains(byte))
            .map_or(rest.len(), |end| needle.len() + end);
        let path = String::from_utf8_lossy(&rest[..end]).into_owned();
        let spelling = Spelling { member: member.map(str::to_owned), section, path };
        if !found.contains(&spelling) {
            found.push(spelling);
        }
    }
}

/// The members of an `ar` archive (GNU or BSD) as `(name, contents)`, its symbol and name
/// tables left out; `None` when `bytes` is no archive or one that cannot be read whole.
fn archive_members(bytes: &[u8]) -> Option<Vec<(String, &[u8])>> {
    const HEADER: usize = 60;
    let mut at = b"!<arch>\n".len();
    if !bytes.starts_with(b"!<arch>\n") {
        return None;
    }
    let mut long_names: &[u8] = &[];
    let mut members = Vec::new();
    while at < bytes.len() {
        let header = bytes.get(at..at.checked_add(HEADER)?)?;
        if header[58..] != *b"`\n" {
            return None;
        }
        let size: usize = std::str::from_utf8(&header[48..58]).ok()?.trim().parse().ok()?;
        let start = at + HEADER;
        let mut body = bytes.get(start..start.checked_add(size)?)?;
        at = start + size + size % 2;
        let field = header[..16].trim_ascii_end();
        let name = if field == b"/" || field == b"/SYM64/" {
            continue;
        } else if field == b"//" {
            long_names = body;
            continue;
        } else if let Some(length) = field.strip_prefix(b"#1/") {
            // BSD: the name opens the contents.
            let length: usize = std::str::from_utf8(length).ok()?.parse().ok()?;
            let name = body.get(..length)?;
            body = &body[length..];
            let end = name.iter().position(|&byte| byte == 0).unwrap_or(name.len());
            &name[..end]
        } else if let Some(offset) = field.strip_prefix(b"/") {
            // GNU: an offset into the name table, the name ending with "/\n".
            let offset: usize = std::str::from_utf8(offset).ok()?.parse().ok()?;
            let rest = long_names.get(offset..)?;
            let end = rest.iter().position(|&byte| byte == b'\n').unwrap_or(rest.len());
            let name = &rest[..end];
            name.strip_suffix(b"/").unwrap_or(name)
        } else {
            field.strip_suffix(b"/").unwrap_or(field)
        };
        if name.starts_with(b"__.SYMDEF") {
            continue;
        }
        members.push((String::from_utf8_lossy(name).into_owned(), body));
    }
    Some(members)
}

/// A section of an ELF file with contents in the file.
#[derive(Debug)]
struct Section {
    name: String,
    range: Range<usize>,
    debug: bool,
}

/// The sections of an ELF file (32 or 64 bits, either byte order) that have contents in it;
/// `None` when `bytes` is no ELF file or its section headers cannot be read.
fn elf_sections(bytes: &[u8]) -> Option<Vec<Section>> {
    const SHT_NOBITS: u32 = 8;
    const SHF_COMPRESSED: u64 = 0x800;
    const SHN_XINDEX: u64 = 0xffff;
    let ident = bytes.get(..16)?;
    if ident[..4] != *b"\x7fELF" {
        return None;
    }
    let wide = match ident[4] {
        1 => false,
        2 => true,
        _ => return None,
    };
    let big = match ident[5] {
        1 => false,
        2 => true,
        _ => return None,
    };
    let read = |at: usize, size: usize| -> Option<u64> {
        let field = bytes.get(at..at.checked_add(size)?)?;
        let fold = |value: u64, byte: &u8| value << 8 | u64::from(*byte);
        Some(if big { field.iter().fold(0, fold) } else { field.iter().rev().fold(0, fold) })
    };
    // e_shoff, e_shentsize, e_shnum, e_shstrndx; then a section header's sh_name, sh_type,
    // sh_flags, sh_offset, sh_size and sh_link as (offset, size).
    let (table, entry, count, names, word) = if wide {
        (read(0x28, 8)?, read(0x3a, 2)?, read(0x3c, 2)?, read(0x3e, 2)?, 8)
    } else {
        (read(0x20, 4)?, read(0x2e, 2)?, read(0x30, 2)?, read(0x32, 2)?, 4)
    };
    if table == 0 {
        return Some(Vec::new());
    }
    if entry < if wide { 64 } else { 40 } {
        return None;
    }
    let header = |index: u64| -> Option<(u64, u64, u64, Range<usize>, u64)> {
        let at = usize::try_from(table.checked_add(index.checked_mul(entry)?)?).ok()?;
        bytes.get(at..at.checked_add(usize::try_from(entry).ok()?)?)?;
        let flags = read(at + 8, word)?;
        let (offset, size, link) = if wide {
            (read(at + 24, 8)?, read(at + 32, 8)?, read(at + 40, 4)?)
        } else {
            (read(at + 16, 4)?, read(at + 20, 4)?, read(at + 24, 4)?)
        };
        let start = usize::try_from(offset).ok()?;
        let range = start..start.checked_add(usize::try_from(size).ok()?)?;
        Some((read(at, 4)?, read(at + 4, 4)?, flags, range, link))
    };
    // Past 0xff00 sections, the count and the name table's index are in section 0.
    let (_, _, _, first, first_link) = header(0)?;
    let count = if count == 0 { first.len() as u64 } else { count };
    let names = if names == SHN_XINDEX { first_link } else { names };
    let names = bytes.get(header(names)?.3)?;
    let mut sections = Vec::new();
    for index in 1..count {
        let (name, kind, flags, range, _) = header(index)?;
        if kind == u64::from(SHT_NOBITS) || range.is_empty() {
            continue;
        }
        if range.end > bytes.len() {
            return None;
        }
        let name = names.get(usize::try_from(name).ok()?..)?;
        let name = &name[..name.iter().position(|&byte| byte == 0)?];
        let debug = flags & SHF_COMPRESSED != 0 || debug_section(name);
        sections.push(Section { name: String::from_utf8_lossy(name).into_owned(), range, debug });
    }
    Some(sections)
}

/// Whether a section of this name holds only what debuggers and tools read: debug info, the
/// compiler's comment, notes, the symbol table and its names.
fn debug_section(name: &[u8]) -> bool {
    const PREFIXES: [&[u8]; 7] = [
        b".debug_",
        b".zdebug_",
        b".gnu.debuglto_",
        b".rela.debug",
        b".rel.debug",
        b".note",
        b".comment",
    ];
    name == b".symtab"
        || name == b".strtab"
        || PREFIXES.iter().any(|prefix| name.starts_with(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::io::Write as _;
    use std::path::Path;
    use std::process::Command;

    /// Runs `program` with `args` in `dir`; `false` when it cannot be started (not installed).
    fn run(dir: &Path, program: &str, args: &[&str]) -> bool {
        match Command::new(program).args(args).current_dir(dir).output() {
            Ok(output) => {
                assert!(output.status.success(), "{program} {args:?}: {output:?}");
                true
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => false,
            Err(err) => panic!("cannot run {program}: {err}"),
        }
    }

    fn places(bytes: &[u8], needle: &str) -> Vec<String> {
        let spellings = spellings_outside_debug_info(bytes, needle.as_bytes());
        assert_eq!(spelled_outside_debug_info(bytes, needle.as_bytes()), !spellings.is_empty());
        spellings.iter().map(ToString::to_string).collect()
    }

    /// Compiles, in `work`: `data.o`, whose `.rodata` spells `dir`; `debug.o`, from a source
    /// file under `dir`, which spells it in debug info only; `libboth.a` of the two (with a
    /// long member name); `libdebug.so` and `librpath.so`, whose run path is under `dir`.
    /// `false` without `cc`.
    fn build(work: &Path, dir: &Path) -> bool {
        let dir_text = dir.to_str().unwrap();
        fs::create_dir_all(dir.join("src")).unwrap();
        fs::write(work.join("data.c"), format!("const char *p = \"{dir_text}/x\";\n")).unwrap();
        fs::write(dir.join("src/debug.c"), "int f(int x) { return x + 1; }\n").unwrap();
        let debug_c = dir.join("src/debug.c");
        let debug_c = debug_c.to_str().unwrap();
        let rpath = format!("-Wl,-rpath,{dir_text}/lib");
        if !run(work, "cc", &["-g", "-c", "data.c", "-o", "data.o"]) {
            let _ = writeln!(std::io::stderr(), "skipping: no `cc` on this machine");
            return false;
        }
        run(work, "cc", &["-g", "-c", debug_c, "-o", "debug.o"]);
        fs::copy(work.join("data.o"), work.join("a_long_member_name_data.o")).unwrap();
        run(work, "ar", &["rcs", "libboth.a", "a_long_member_name_data.o", "debug.o"]);
        run(work, "cc", &["-g", "-shared", "-fPIC", debug_c, "-o", "libdebug.so"]);
        run(work, "cc", &["-g", "-shared", "-fPIC", debug_c, "-o", "librpath.so", &rpath]);
        true
    }

    #[test]
    fn compiled_objects_spell_a_directory_in_data_but_not_in_debug_info() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("sandbox/out");
        let needle = dir.to_str().unwrap();
        let work = temp.path();
        if !build(work, &dir) {
            return;
        }
        let read = |name: &str| fs::read(work.join(name)).unwrap();
        for name in ["data.o", "debug.o", "libboth.a", "libdebug.so", "librpath.so"] {
            assert!(memmem::find(&read(name), needle.as_bytes()).is_some(), "{name} spells it");
        }
        assert_eq!(places(&read("data.o"), needle), [".rodata"]);
        assert_eq!(places(&read("debug.o"), needle), [] as [&str; 0]);
        assert_eq!(places(&read("libboth.a"), needle), ["(a_long_member_name_data.o) .rodata"]);
        assert_eq!(places(&read("libdebug.so"), needle), [] as [&str; 0]);
        assert_eq!(places(&read("librpath.so"), needle), [".dynstr"]);
        let paths = |name: &str| -> Vec<String> {
            let spellings = spellings_outside_debug_info(&read(name), needle.as_bytes());
            spellings.into_iter().map(|spelling| spelling.path).collect()
        };
        assert_eq!(paths("libboth.a"), [format!("{needle}/x")]);
        assert_eq!(paths("librpath.so"), [format!("{needle}/lib")]);
        let sibling = format!("{needle}-other");
        assert_eq!(places(&read("data.o"), &sibling), [] as [&str; 0], "not spelled at all");
        for name in ["data.o", "libboth.a"] {
            let bytes = read(name);
            for cut in (0..bytes.len()).step_by(13) {
                spelled_outside_debug_info(&bytes[..cut], needle.as_bytes());
            }
        }
    }

    #[test]
    fn bsd_archives_are_read_member_by_member() {
        let temp = tempfile::tempdir().unwrap();
        let dir = temp.path().join("sandbox/out");
        let needle = dir.to_str().unwrap();
        let work = temp.path();
        if !build(work, &dir) {
            return;
        }
        let mut archive = b"!<arch>\n".to_vec();
        for (name, body) in [
            ("__.SYMDEF SORTED", format!("symbols {needle}").into_bytes()),
            ("debug.o", fs::read(work.join("debug.o")).unwrap()),
            ("data.o", fs::read(work.join("data.o")).unwrap()),
            ("notes.txt", format!("{needle}\n").into_bytes()),
        ] {
            let padded = format!("{name}\0\0\0");
            let size = padded.len() + body.len();
            let header =
                format!("#1/{:<13}{:<12}{:<6}{:<6}{:<8}{size:<10}`\n", padded.len(), 0, 0, 0, 644);
            archive.extend_from_slice(header.as_bytes());
            archive.extend_from_slice(padded.as_bytes());
            archive.extend_from_slice(&body);
            if size % 2 == 1 {
                archive.push(b'\n');
            }
        }
        assert_eq!(
            places(&archive, needle),
            ["(data.o) .rodata", "(notes.txt) outside ELF sections"]
        );
        archive.truncate(archive.len() - 20);
        let mut cut_short = places(&archive, needle);
        cut_short.dedup();
        assert_eq!(cut_short, ["outside ELF sections"], "cut short: the whole file counts");
    }

    #[test]
    fn other_files_count_wherever_they_spell_it() {
        let needle = "/cache/hermetic/k/target/debug/build/p/out";
        assert_eq!(
            places(format!("prefix={needle}\n").as_bytes(), needle),
            ["outside ELF sections"]
        );
        let blob = [b"\0\x01\x02".as_slice(), needle.as_bytes(), b"\0"].concat();
        assert_eq!(places(&blob, needle), ["outside ELF sections"]);
        assert_eq!(places(b"\0\x01 /cache/hermetic/k", needle), [] as [&str; 0]);
        assert_eq!(places(needle.as_bytes(), ""), [] as [&str; 0]);
        let broken = [b"\x7fELF\x02\x01\x01".as_slice(), &[0; 64], needle.as_bytes()].concat();
        assert_eq!(places(&broken, needle), ["outside ELF sections"], "no section headers");
    }

    /// An ELF file of the given class and byte order: its header, the contents of `sections`
    /// (`(name, flags, contents)`), the name table, the section headers, then `trailer`.
    fn synthetic_elf(
        wide: bool,
        big: bool,
        sections: &[(&str, u64, &[u8])],
        trailer: &[u8],
    ) -> Vec<u8> {
        let put = |out: &mut Vec<u8>, at: usize, value: u64, size: usize| {
            let bytes = value.to_be_bytes();
            let field = &bytes[8 - size..];
            if big {
                out[at..at + size].copy_from_slice(field);
            } else {
                out[at..at + size]
                    .iter_mut()
                    .zip(field.iter().rev())
                    .for_each(|(to, from)| *to = *from);
            }
        };
        let (ehsize, entry, word) = if wide { (64, 64, 8) } else { (52, 40, 4) };
        let mut names = b"\0.shstrtab\0".to_vec();
        let mut out = vec![0; ehsize];
        out[..6].copy_from_slice(&[
            0x7f,
            b'E',
            b'L',
            b'F',
            if wide { 2 } else { 1 },
            if big { 2 } else { 1 },
        ]);
        let mut headers = vec![(0, 0, 0, 0, 0)];
        for (name, flags, contents) in sections {
            headers.push((names.len(), 1, *flags, out.len(), contents.len()));
            names.extend_from_slice(name.as_bytes());
            names.push(0);
            out.extend_from_slice(contents);
        }
        headers.push((1, 3, 0, out.len(), names.len()));
        out.extend_from_slice(&names);
        let table = out.len();
        let count = headers.len();
        out.resize(table + count * entry, 0);
        for (index, (name, kind, flags, offset, size)) in headers.into_iter().enumerate() {
            let at = table + index * entry;
            put(&mut out, at, name as u64, 4);
            put(&mut out, at + 4, kind, 4);
            put(&mut out, at + 8, flags, word);
            let (offset_at, size_at) = if wide { (24, 32) } else { (16, 20) };
            put(&mut out, at + offset_at, offset as u64, word);
            put(&mut out, at + size_at, size as u64, word);
        }
        let fields = if wide { [0x28, 0x3a, 0x3c, 0x3e] } else { [0x20, 0x2e, 0x30, 0x32] };
        put(&mut out, fields[0], table as u64, word);
        put(&mut out, fields[1], entry as u64, 2);
        put(&mut out, fields[2], count as u64, 2);
        put(&mut out, fields[3], count as u64 - 1, 2);
        out.extend_from_slice(trailer);
        out
    }

    #[test]
    fn elf_sections_are_read_in_either_class_and_byte_order() {
        let needle = "/sandbox/out";
        let spelled = b"x/sandbox/out/lib\0".as_slice();
        for (wide, big) in [(false, false), (false, true), (true, false), (true, true)] {
            let debug_only = [
                (".debug_str", 0, spelled),
                (".zdebug_line", 0, spelled),
                (".gnu.debuglto_.debug_str", 0, spelled),
                (".compressed", 0x800, spelled),
                (".comment", 0, spelled),
                (".note.gnu.build-id", 0, spelled),
                (".strtab", 0, spelled),
                (".rela.debug_info", 0, spelled),
                (".text", 0, b"\x90\x90".as_slice()),
            ];
            let elf = synthetic_elf(wide, big, &debug_only, b"");
            assert_eq!(places(&elf, needle), [] as [&str; 0], "wide {wide}, big {big}");
            let with_data =
                [&debug_only[..], &[(".rodata.str1.1", 0, spelled), (".data", 0, spelled)]]
                    .concat();
            let elf = synthetic_elf(wide, big, &with_data, spelled);
            assert_eq!(
                places(&elf, needle),
                [".rodata.str1.1", ".data", "outside ELF sections"],
                "wide {wide}, big {big}"
            );
        }
    }
}
