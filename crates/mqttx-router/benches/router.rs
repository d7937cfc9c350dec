//! Criterion benchmarks for mqttx-router: matching among 1 000 000 subscriptions, subscribe and
//! unsubscribe rates, bytes per subscription, retained lookups, and a naive scan as reference.
//!
//! Run with `cargo bench -p mqttx-router --bench router`. Memory figures are printed before the
//! timings; they come from the counting global allocator below.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion};
use mqttx_router::{
    Deliveries, QoS, RetainedStore, Router, SubscribeOptions, SubscriberId, TopicFilter, TopicName,
};

/// Counts the bytes and allocations currently live (requested sizes; malloc's own per-block
/// overhead comes on top).
struct Counting;

static BYTES: AtomicUsize = AtomicUsize::new(0);
static BLOCKS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to `System` with the same arguments; the counters are only
// bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            BYTES.fetch_add(layout.size(), Relaxed);
            BLOCKS.fetch_add(1, Relaxed);
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            BYTES.fetch_add(layout.size(), Relaxed);
            BLOCKS.fetch_add(1, Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) };
        BYTES.fetch_sub(layout.size(), Relaxed);
        BLOCKS.fetch_sub(1, Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded unchanged.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            BYTES.fetch_add(new_size, Relaxed);
            BYTES.fetch_sub(layout.size(), Relaxed);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const SUBSCRIPTIONS: usize = 1_000_000;
const SUBS_PER_SUBSCRIBER: usize = 10;
const TENANTS: u64 = 100;
const DEVICES: u64 = 1_000;
const METRICS: [&str; 10] = [
    "temperature",
    "humidity",
    "pressure",
    "battery",
    "rssi",
    "voltage",
    "current",
    "power",
    "status",
    "firmware",
];

/// xorshift64: deterministic workloads without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn metric(&mut self) -> &'static str {
        METRICS[self.below(METRICS.len() as u64) as usize]
    }
}

/// One filter of the realistic mix: 80 % exact `tenant/{t}/device/{d}/{metric}`, 15 % with `+`,
/// 5 % with `#`. Most wildcard subscriptions are per device (a device's own commands, a device
/// view); a few are broad (a per-metric dashboard over a tenant, a tenant-wide `#`).
fn mix_filter(rng: &mut Rng) -> String {
    let (t, d) = (rng.below(TENANTS), rng.below(DEVICES));
    // Per 10 000: broad filters are rare, so that a topic has about five matches on average.
    match rng.below(10_000) {
        0..8_000 => format!("tenant/{t}/device/{d}/{}", rng.metric()),
        8_000..9_400 => format!("tenant/{t}/device/{d}/+"),
        9_400..9_410 => format!("tenant/{t}/device/+/{}", rng.metric()),
        9_410..9_500 => format!("tenant/{t}/+/{d}/{}", rng.metric()),
        9_500..9_999 => format!("tenant/{t}/device/{d}/#"),
        _ => format!("tenant/{t}/#"),
    }
}

fn mix_topic(rng: &mut Rng) -> TopicName {
    let (t, d) = (rng.below(TENANTS), rng.below(DEVICES));
    TopicName::new(&format!("tenant/{t}/device/{d}/{}", rng.metric())).unwrap()
}

fn bytes() -> (usize, usize) {
    (BYTES.load(Relaxed), BLOCKS.load(Relaxed))
}

struct World {
    router: Router,
    filters: Vec<(TopicFilter, SubscriberId)>,
    topics: Vec<TopicName>,
}

fn build_world() -> World {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let filters: Vec<(TopicFilter, SubscriberId)> = (0..SUBSCRIPTIONS)
        .map(|i| {
            let f = TopicFilter::new(&mix_filter(&mut rng)).unwrap();
            (f, SubscriberId::new((i / SUBS_PER_SUBSCRIBER) as u64))
        })
        .collect();
    let (before, blocks_before) = bytes();
    let start = Instant::now();
    let mut router = Router::new();
    let opts = SubscribeOptions::new(QoS::AtLeastOnce);
    for (f, s) in &filters {
        router.subscribe(f, *s, opts).unwrap();
    }
    let built = start.elapsed();
    let (after, blocks_after) = bytes();
    let n = router.len() as f64;
    println!(
        "router: {} subscriptions, {} subscribers, built in {built:.2?}",
        router.len(),
        router.subscriber_count()
    );
    println!(
        "router: {:.1} heap bytes per subscription ({} MB), {:.2} allocations per subscription",
        (after - before) as f64 / n,
        (after - before) / 1_000_000,
        (blocks_after - blocks_before) as f64 / n,
    );
    println!(
        "router: {} trie nodes ({:.2} per subscription), {} interned strings",
        router.node_count(),
        router.node_count() as f64 / n,
        router.interned_count(),
    );

    // Topics for the match benchmark: random topics of the mix with at most 10 matches.
    let mut out = Deliveries::new();
    let mut topics = Vec::new();
    let mut total = 0;
    let mut max = 0;
    while topics.len() < 1024 {
        let t = mix_topic(&mut rng);
        router.matches_into(&t, None, &mut out);
        if out.len() <= 10 {
            total += out.len();
            max = max.max(out.len());
            topics.push(t);
        }
    }
    println!(
        "match topics: 1024, {:.2} deliveries on average, {max} at most",
        total as f64 / topics.len() as f64
    );
    World {
        router,
        filters,
        topics,
    }
}

fn bench_router(c: &mut Criterion, world: &mut World) {
    let built_len = world.router.len();
    let mut g = c.benchmark_group("router_1M");
    g.measurement_time(Duration::from_secs(5));
    let mut out = Deliveries::new();
    let mut i = 0;
    g.bench_function("route (<=10 matches)", |b| {
        b.iter(|| {
            i = (i + 1) % world.topics.len();
            world
                .router
                .route(black_box(&world.topics[i]), None, &mut out);
            black_box(out.len())
        })
    });
    g.bench_function("route, one topic (warm cache)", |b| {
        let t = &world.topics[0];
        b.iter(|| {
            world.router.route(black_box(t), None, &mut out);
            black_box(out.len())
        })
    });
    g.bench_function("matches_into (<=10 matches)", |b| {
        b.iter(|| {
            i = (i + 1) % world.topics.len();
            world
                .router
                .matches_into(black_box(&world.topics[i]), None, &mut out);
            black_box(out.len())
        })
    });

    // Subscribe and unsubscribe rates: fresh subscriptions of the same mix, by new subscribers.
    let mut rng = Rng(0xDEAD_BEEF_CAFE_F00D);
    let fresh: Vec<TopicFilter> = (0..100_000)
        .map(|_| TopicFilter::new(&mix_filter(&mut rng)).unwrap())
        .collect();
    let opts = SubscribeOptions::new(QoS::AtLeastOnce);
    let base = 1u64 << 40;
    g.bench_function("subscribe", |b| {
        b.iter_custom(|iters| {
            let n = iters as usize;
            let start = Instant::now();
            for k in 0..n {
                let f = &fresh[k % fresh.len()];
                world
                    .router
                    .subscribe(f, SubscriberId::new(base + k as u64), opts)
                    .unwrap();
            }
            let took = start.elapsed();
            for k in 0..n {
                world
                    .router
                    .unsubscribe_all(SubscriberId::new(base + k as u64));
            }
            took
        })
    });
    g.bench_function("unsubscribe", |b| {
        b.iter_custom(|iters| {
            let n = iters as usize;
            for k in 0..n {
                let f = &fresh[k % fresh.len()];
                world
                    .router
                    .subscribe(f, SubscriberId::new(base + k as u64), opts)
                    .unwrap();
            }
            let start = Instant::now();
            for k in 0..n {
                let f = &fresh[k % fresh.len()];
                world
                    .router
                    .unsubscribe(f, SubscriberId::new(base + k as u64));
            }
            start.elapsed()
        })
    });
    g.bench_function("unsubscribe_all (10 subscriptions)", |b| {
        b.iter_custom(|iters| {
            let n = iters as usize;
            for k in 0..n * 10 {
                let f = &fresh[k % fresh.len()];
                world
                    .router
                    .subscribe(f, SubscriberId::new(base + (k / 10) as u64), opts)
                    .unwrap();
            }
            let start = Instant::now();
            for k in 0..n {
                world
                    .router
                    .unsubscribe_all(SubscriberId::new(base + k as u64));
            }
            start.elapsed()
        })
    });
    g.finish();
    assert_eq!(
        world.router.len(),
        built_len,
        "the benchmarks leave the router as built"
    );

    // The reference: scan every filter with the naive matcher.
    let mut g = c.benchmark_group("naive_1M");
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(5));
    g.bench_function("scan all filters (<=10 matches)", |b| {
        b.iter(|| {
            i = (i + 1) % world.topics.len();
            let t = black_box(&world.topics[i]);
            world.filters.iter().filter(|(f, _)| f.matches(t)).count()
        })
    });
    g.finish();
}

fn retained_store(devices_per_tenant: u64, tenants: u64) -> RetainedStore<u32> {
    let mut store = RetainedStore::new();
    let mut n = 0;
    for t in 0..tenants {
        for d in 0..devices_per_tenant {
            for m in METRICS {
                store.set(
                    &TopicName::new(&format!("tenant/{t}/device/{d}/{m}")).unwrap(),
                    n,
                );
                n += 1;
            }
        }
    }
    store
}

fn bench_retained(c: &mut Criterion) {
    let (before, blocks_before) = bytes();
    let big = retained_store(DEVICES, TENANTS);
    let (after, blocks_after) = bytes();
    println!(
        "retained: {} topics, {:.1} heap bytes per retained topic (u32 values, topic names included), {:.2} allocations per topic",
        big.len(),
        (after - before) as f64 / big.len() as f64,
        (blocks_after - blocks_before) as f64 / big.len() as f64,
    );
    let small = retained_store(DEVICES, 1);
    let filters = [
        ("device/+ (10 matches)", "tenant/0/device/17/+"),
        ("device/# (10 matches)", "tenant/0/device/17/#"),
        ("+/metric (1000 matches)", "tenant/0/device/+/temperature"),
        ("exact (1 match)", "tenant/0/device/17/temperature"),
    ];
    let mut g = c.benchmark_group("retained");
    g.measurement_time(Duration::from_secs(3));
    for (name, filter) in filters {
        let f = TopicFilter::new(filter).unwrap();
        for (size, store) in [("10k", &small), ("1M", &big)] {
            let n = store.matching(&f).count();
            assert_eq!(n, big.matching(&f).count());
            g.bench_with_input(BenchmarkId::new(name, size), &f, |b, f| {
                b.iter(|| {
                    store
                        .matching(black_box(f))
                        .fold(0u64, |acc, (_, v)| acc + u64::from(*v))
                })
            });
        }
    }
    g.finish();
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    let mut world = build_world();
    bench_router(&mut c, &mut world);
    drop(world);
    bench_retained(&mut c);
    c.final_summary();
}
