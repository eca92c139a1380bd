//! What the fuzz targets share.
//!
//! - `Chunks`: a reader over bytes in memory that hands them over in the
//!   chunks a `Split` says (all at once, a byte at a time, cut at one
//!   point, or pseudo-random sizes), and counts what was taken: the
//!   targets check that a reader yields the same whatever the split, and
//!   never takes more than it says.
//! - `run`: polls a future over such a reader to its end (it never waits).
//! - `Largest`: the global allocator, recording the largest single request
//!   since `Largest::reset`, so a target can check that a hostile length
//!   prefix is refused before anything is allocated for it.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    future::Future,
    pin::Pin,
    sync::atomic::{AtomicUsize, Ordering},
    task::{Context, Poll, Waker},
};
use tokio::io::{AsyncRead, ReadBuf};

/// How `Chunks` hands over its bytes.
#[derive(Debug, Clone, Copy)]
pub enum Split {
    Whole,
    /// `n` bytes at a time (1: every boundary at once).
    Every(usize),
    /// Two chunks, cut before byte `k`.
    At(usize),
    /// Sizes from 1 to `max`, from a generator seeded with `seed`.
    Random {
        seed: u64,
        max: usize,
    },
}

/// The splits every target tries: all at once, a byte at a time, each
/// single cut point for inputs up to `every_cut_up_to` bytes, and two
/// pseudo-random ones seeded by the input itself.
pub fn splits(data: &[u8], every_cut_up_to: usize) -> Vec<Split> {
    let mut out = vec![Split::Whole, Split::Every(1), Split::Every(7)];
    if data.len() <= every_cut_up_to {
        out.extend((1..data.len()).map(Split::At));
    }
    let seed = fnv(data);
    out.push(Split::Random { seed, max: 16 });
    out.push(Split::Random {
        seed: seed ^ 0x9e37_79b9_7f4a_7c15,
        max: 4096,
    });
    out
}

fn fnv(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Bytes handed over per `Split`; `taken` says how many a reader took.
pub struct Chunks<'a> {
    data: &'a [u8],
    split: Split,
    rng: u64,
    pub taken: usize,
}

impl<'a> Chunks<'a> {
    pub fn new(data: &'a [u8], split: Split) -> Self {
        let rng = match split {
            Split::Random { seed, .. } => seed | 1,
            _ => 1,
        };
        Chunks {
            data,
            split,
            rng,
            taken: 0,
        }
    }

    /// The end of the chunk that starts at `taken`.
    fn chunk_end(&mut self) -> usize {
        let len = self.data.len();
        let at = self.taken;
        match self.split {
            Split::Whole => len,
            Split::Every(n) => (at + n).min(len),
            Split::At(k) if at < k => k.min(len),
            Split::At(_) => len,
            Split::Random { max, .. } => {
                // xorshift64
                self.rng ^= self.rng << 13;
                self.rng ^= self.rng >> 7;
                self.rng ^= self.rng << 17;
                (at + 1 + (self.rng % max as u64) as usize).min(len)
            }
        }
    }
}

impl AsyncRead for Chunks<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let at = self.taken;
        let end = self.chunk_end();
        let n = (end - at).min(buf.remaining());
        buf.put_slice(&self.data[at..at + n]);
        self.taken += n;
        Poll::Ready(Ok(()))
    }
}

/// The output of a future whose reads are all from memory: it never
/// waits, so one poll ends it.
pub fn run<F: Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("a read from memory waited"),
    }
}

/// The allocator every target runs on: the system's, recording the
/// largest single allocation.
pub struct Largest;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

impl Largest {
    pub fn reset() {
        LARGEST.store(0, Ordering::Relaxed);
    }

    /// The largest allocation (or growth) since `reset`, in bytes.
    pub fn get() -> usize {
        LARGEST.load(Ordering::Relaxed)
    }

    fn note(size: usize) {
        LARGEST.fetch_max(size, Ordering::Relaxed);
    }
}

// SAFETY: every call is passed to `System` unchanged; only sizes are noted.
unsafe impl GlobalAlloc for Largest {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Largest::note(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Largest::note(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Largest::note(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Largest = Largest;

/// Checks a parser of "the bytes read so far" (`Ok(None)`: more needed)
/// against the prefixes of `data`: undecided up to a point, and from
/// there on what the whole input gives, so a reader that calls it after
/// every read gets the same answer however the bytes were split; and
/// decided by `cap` bytes, so a reader stops there. Every prefix of a
/// short input; of a long one a sample, the first decided prefix (by
/// bisection) and the 16 after it. Returns the whole input's answer.
pub fn by_prefixes<R: PartialEq + std::fmt::Debug>(
    data: &[u8],
    cap: usize,
    parse: impl Fn(&[u8]) -> R,
    undecided: impl Fn(&R) -> bool,
) -> R {
    let whole = parse(data);
    let len = data.len();
    let mut cuts: Vec<usize> = if len <= 512 {
        (0..=len).collect()
    } else {
        (0..=256)
            .chain((1..16).map(|i| len * i / 16))
            .chain([cap.saturating_sub(1), cap, cap + 1, len])
            .filter(|k| *k <= len)
            .collect()
    };
    cuts.sort_unstable();
    cuts.dedup();
    let mut decided_at = None;
    for k in cuts {
        let part = parse(&data[..k]);
        if undecided(&part) {
            assert!(
                decided_at.is_none(),
                "undecided at {k} after {decided_at:?}"
            );
        } else {
            assert_eq!(part, whole, "cut at {k}");
            decided_at.get_or_insert(k);
        }
    }
    if len >= cap {
        assert!(!undecided(&parse(&data[..cap])), "undecided at the cap");
    }
    if !undecided(&whole) {
        // The first decided prefix, and the ones after it.
        let (mut lo, mut hi) = (0, len.min(cap));
        while lo < hi {
            let mid = (lo + hi) / 2;
            if undecided(&parse(&data[..mid])) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        for k in lo..=(lo + 16).min(len) {
            assert_eq!(parse(&data[..k]), whole, "cut at {k}");
        }
    }
    whole
}
