//! A Rust wrapper around a C function compiled (and memoized) by the build script.

unsafe extern "C" {
    fn memo_answer() -> i32;
}

/// The C library's answer: `ANSWER_BASE + DETAIL_OFFSET` from its headers.
pub fn answer() -> i32 {
    // SAFETY: `memo_answer` takes nothing, touches no memory and returns an int.
    unsafe { memo_answer() }
}

#[cfg(test)]
mod tests {
    #[test]
    fn links_and_answers() {
        assert_eq!(super::answer(), 42);
    }
}
