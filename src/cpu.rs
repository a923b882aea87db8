//! Hints to the CPU.

/// Asks the CPU to bring the cache lines holding the first and the last of `len` bytes at `at` closer (what
/// a loop about to touch a field of at most two lines needs).
#[inline]
pub fn prefetch(at: *const u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        let (first, last) = (at, at.wrapping_add(len.saturating_sub(1)));
        // SAFETY: a prefetch is a hint: it never faults and never changes memory, whatever the address.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(first.cast());
            _mm_prefetch::<_MM_HINT_T0>(last.cast());
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (at, len);
}
