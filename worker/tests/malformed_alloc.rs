//! No allocation proportional to a size a model file claims: loading the
//! corpus cases that claim 2^40 elements, tensors, entries or blocks peaks
//! at a few MiB above the file's own size. A counting global allocator
//! measures it; this binary holds one test so nothing else allocates
//! concurrently.

mod malformed;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use rbees_core::BackendOptions;
use rbees_model::{GgufFile, LoadOptions};
use rbees_worker::engine::{load_gguf, BackendChoice};

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only counts bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Peak bytes allocated above the starting level while `f` runs.
fn peak_during(f: impl FnOnce()) -> usize {
    let start = LIVE.load(Ordering::Relaxed);
    PEAK.store(start, Ordering::Relaxed);
    f();
    PEAK.load(Ordering::Relaxed) - start
}

/// Allowed peak: the model file itself (its bytes are copied once into the
/// loader) plus what the tiny model legitimately needs, with headroom.
const LIMIT: usize = 64 << 20;

#[test]
fn claimed_sizes_do_not_drive_allocation() {
    let cases = malformed::cases();
    let mut report = Vec::new();
    for case in cases.iter().filter(|c| {
        c.name.contains("2^40") || c.name.contains("offset") || c.name == "dims-overflow"
    }) {
        for backend in ["ndarray", "candle", "cpu"] {
            let bytes = case.bytes.clone();
            let peak = peak_during(|| {
                let result = GgufFile::from_bytes("claim.gguf", bytes).map(|gguf| {
                    let choice = BackendChoice::new(
                        backend,
                        BackendOptions {
                            device: "cpu".into(),
                            threads: Some(1),
                        },
                    );
                    load_gguf(&gguf, &choice, &LoadOptions::default(), &mut |_, _| {}).is_ok()
                });
                assert!(!matches!(result, Ok(true)), "{} loaded", case.name);
            });
            report.push(format!(
                "{:<28} {backend:<8} peak {:>8} KiB",
                case.name,
                peak >> 10
            ));
            assert!(
                peak < LIMIT,
                "{} on {backend}: peak {peak} bytes",
                case.name
            );
        }
    }
    assert!(report.len() >= 12, "{report:#?}");
    println!("{}", report.join("\n"));
}
