//! Where a program names its loader (`PT_INTERP`), from the first bytes of an x86_64 ELF file:
//! a module of both the shim (`ldpath.rs`: is this the loader the runner measured?) and the
//! `memoshelve-env-shim` crate (`#[path]`; the runner's `trace/env.rs`: which loader did it
//! measure?), so both read it alike. No panicking code (the shim must not link unwinding).

/// The offset and length, NUL included, of the loader's name in the 64-bit little-endian
/// x86_64 ELF file whose first bytes are `head`; `None` for any other file, one without a
/// `PT_INTERP` (static), or program headers past `head`.
pub fn interpreter_at(head: &[u8]) -> Option<(usize, usize)> {
    const PT_INTERP: u32 = 3;
    const EM_X86_64: u16 = 62;
    /// The size of an `Elf64_Phdr`.
    const HEADER: usize = 56;
    let u16_at =
        |at: usize| Some(u16::from_le_bytes(head.get(at..at.checked_add(2)?)?.try_into().ok()?));
    let u32_at =
        |at: usize| Some(u32::from_le_bytes(head.get(at..at.checked_add(4)?)?.try_into().ok()?));
    let u64_at = |at: usize| {
        usize::try_from(u64::from_le_bytes(head.get(at..at.checked_add(8)?)?.try_into().ok()?)).ok()
    };
    if head.get(..6)? != b"\x7fELF\x02\x01"
        || u16_at(18)? != EM_X86_64
        || usize::from(u16_at(54)?) != HEADER
    {
        return None;
    }
    let (table, count) = (u64_at(32)?, usize::from(u16_at(56)?));
    for index in 0..count {
        let at = table.checked_add(index.checked_mul(HEADER)?)?;
        if u32_at(at)? == PT_INTERP {
            return Some((u64_at(at + 8)?, u64_at(at + 32)?));
        }
    }
    None
}
