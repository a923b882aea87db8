//! The exact Nexmark bid stream of SPEC.md; every bid is a pure function of its number and the seed, so any
//! shard can generate any range.
//!
//! The executable spec is `gen_reference.py` (next to SPEC.md); this module reproduces it bit for bit,
//! including the order of the random draws, and is checked against the reference's vector files in
//! `tests/data/nexmark/`. The same stream feeds the Flink baseline, so any deviation would make the benchmark
//! comparison meaningless.
//!
//! Bid `b` draws from its own `SplitMix64` stream seeded with `mix64(seed + b * GOLDEN)`: no state is carried
//! from one bid to the next, so split `j` of `N` can emit `b = j, j + N, j + 2N, ...` and the union of all
//! splits is the same stream whatever `N` is. Everything that is the same for all bids (the 1 MiB `extra`
//! pool, the URLs, the channel names, a table of powers of ten) is built once per seed in [`Tables`] and
//! shared through an [`Arc`], so generating a bid is a few multiplications and table lookups: no allocation,
//! no formatting, no `pow` (except, to stay exact, for ~1 bid in 70,000).

use std::sync::Arc;

/// Event time of bid 0: 2026-01-01T00:00:00Z in epoch milliseconds, fixed so that runs are reproducible.
pub const BASE_TIME_MS: i64 = 1_767_225_600_000;

/// `SplitMix64`'s increment (2^64 / golden ratio); also spaces the per-bid seeds `seed + b * GOLDEN`.
pub(super) const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// Seed of the reference generator and of the benchmarks.
const DEFAULT_SEED: u64 = 42;

/// Bids per event-time second by default: one bid per microsecond, as in the reference.
const DEFAULT_EVENT_RATE: u64 = 1_000_000;

/// Milliseconds per second, to turn bid numbers into event times.
pub(super) const MS_PER_S: u64 = 1_000;

/// Salt that separates the table stream from the per-bid streams (Java's `Random` multiplier, as in the
/// reference).
const TABLES_SALT: u64 = 0x5_DEEC_E66D;

/// Length of the `extra` pool: 1 MiB of lowercase letters, large enough that `extra` rarely repeats.
pub(super) const POOL_LEN: u32 = 1 << 20;

/// Number of non-hot channels `channel-0 .. channel-9999`, each with a fixed URL.
const CHANNELS: u32 = 10_000;

/// The hot channels, one of which is chosen by half of the bids (Nexmark's `HOT_CHANNELS`).
const HOT_CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];

/// Nexmark's event mix is 1 person, 3 auctions and 46 bids per 50 events; only bids are generated, so an
/// "epoch" of 46 consecutive bids advances the auction count by 3 and the person count by 1.
pub(super) const BIDS_PER_EPOCH: u64 = 46;

/// Auctions created per epoch (see [`BIDS_PER_EPOCH`]).
pub(super) const AUCTIONS_PER_EPOCH: u64 = 3;

/// Nexmark's `NUM_IN_FLIGHT_AUCTIONS`: a cold bid goes to one of the last 100 auctions.
const AUCTIONS_IN_FLIGHT: u64 = 100;

/// Nexmark's `NUM_ACTIVE_PEOPLE`: a cold bid comes from one of the last 1000 people.
pub(super) const ACTIVE_PEOPLE: u64 = 1_000;

/// Ids that a cold bid may draw beyond the last created auction or person, as in Nexmark's generator.
pub(super) const FUTURE_IDS: u64 = 10;

/// The hot auction and the hot bidder are the last ids rounded down to a multiple of this (Nexmark's
/// `HOT_*` rounding).
pub(super) const HOT_ID_ROUNDING: u64 = 100;

/// Nexmark's `FIRST_AUCTION_ID` and `FIRST_PERSON_ID`: ids start at 1000.
pub(super) const FIRST_ID: u64 = 1_000;

/// Nexmark's `hotAuctionRatio`: 1 in 2 bids is for the hot auction.
const HOT_AUCTION_RATIO: u32 = 2;

/// Nexmark's `hotBiddersRatio`: 3 in 4 bids are from the hot bidder.
const HOT_BIDDER_RATIO: u32 = 4;

/// 1 in 2 bids uses one of the hot channels.
const HOT_CHANNEL_RATIO: u32 = 2;

/// Prices are log-uniform over `[MIN_PRICE, MIN_PRICE * 10^PRICE_DECADES)` = 100 .. 10^8 (Nexmark's
/// `nextPrice`).
const MIN_PRICE: f64 = 100.0;

/// See [`MIN_PRICE`].
const PRICE_DECADES: f64 = 6.0;

/// 2^-53: the reference's `next_double` is a 53-bit integer times this (every such product is exact).
const UNIT_DOUBLE_ULP: f64 = 1.0 / (1u64 << 53) as f64;

/// Steps per unit of the price exponent in [`Tables::price_steps`]: fine enough that `10^r` (`r < 1/256`)
/// needs only a degree-5 polynomial for a relative error below 1e-15.
const PRICE_STEPS_PER_DECADE: u32 = 256;

/// Entries of the price table: one per step of `[0, 6)`.
const PRICE_STEPS: usize = 6 * PRICE_STEPS_PER_DECADE as usize;

/// Relative margin (2^-40, ~9e-13) within which the fast price is not trusted to round like the reference:
/// its error is below 5e-15 relative (table ~3e-16, polynomial ~7e-16, exponent ~1e-15, roundings ~1e-15,
/// `pow` itself ~1e-16), so this margin is 200 times what is needed, and still only ~1 bid in 70,000 falls
/// back to `powf`.
const PRICE_FAST_MARGIN: f64 = 1.0 / (1u64 << 40) as f64;

/// Shortest `extra`: with the other columns it makes rows of ~100 bytes on average, as in the reference.
const EXTRA_LEN_MIN: u32 = 54;

/// Number of possible `extra` lengths: 54 ..= 81 bytes.
const EXTRA_LEN_CHOICES: u32 = 28;

/// 9 in 10 channel URLs carry a `&channel_id=` parameter.
const URL_CHANNEL_ID_RATIO: u32 = 10;

/// Letters a random word is drawn from: `a..=z`.
pub(super) const ALPHABET_LEN: u32 = 26;

/// Shortest word in a URL; words are 3 to 5 letters.
const URL_WORD_LEN_MIN: u32 = 3;

/// Number of possible URL word lengths (see [`URL_WORD_LEN_MIN`]).
const URL_WORD_LEN_CHOICES: u32 = 3;

/// Most draws one bid takes: auction 2, bidder 2, price 1, channel 2, extra 2.
const BID_DRAWS_MAX: usize = 9;

/// How the stream is parameterized; two generators with equal configs produce the same bids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GeneratorConfig {
    /// Seed of both the tables and the per-bid random streams (default 42, as in the benchmarks).
    pub seed: u64,
    /// Bids per event-time second: bid `b` has `dateTime = BASE + b * 1000 / event_rate` ms (default 1M).
    /// 0 is treated as 1 so that the generator can never divide by zero.
    pub event_rate: u64,
    /// If > 0, `bidder` is uniform over `[0, key_space)` instead of Nexmark's hot/cold people (default 0);
    /// at most 2^63 so that every bidder fits in the `i64` column.
    pub key_space: u64,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        GeneratorConfig { seed: DEFAULT_SEED, event_rate: DEFAULT_EVENT_RATE, key_space: 0 }
    }
}

/// The `SplitMix64` finalizer (Stafford's mix 13): a bijection of `u64` that spreads every input bit over
/// every output bit.
#[inline]
pub(super) fn mix64(z: u64) -> u64 {
    let z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Uniform in `[0, bound)` from 64 random bits, by Lemire's multiply-shift on the top 32 bits (no rejection,
/// as in the reference). With a 32-bit bound the product fits in 64 bits (one plain multiplication) and the
/// result, below `bound`, in 32.
#[inline]
fn bounded(bits: u64, bound: u32) -> u32 {
    (((bits >> 32) * u64::from(bound)) >> 32) as u32
}

/// [`bounded`] for any 64-bit bound (a large `key_space`): the product is taken in 128 bits. The result is
/// below `bound`, so it fits in `u64`.
#[inline]
pub(super) fn bounded_wide(bits: u64, bound: u64) -> u64 {
    ((u128::from(bits >> 32) * u128::from(bound)) >> 32) as u64
}

/// Uniform in `[0, 1)` from the top 53 of 64 random bits, as the reference's `next_double`.
#[inline]
fn unit_double(bits: u64) -> f64 {
    (bits >> 11) as f64 * UNIT_DOUBLE_ULP
}

/// A `SplitMix64` stream, drawn exactly like the reference's `Rng`; builds the tables.
pub(super) struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub(super) fn new(state: u64) -> Self {
        SplitMix64 { state }
    }

    /// The next 64 random bits.
    #[inline]
    pub(super) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN);
        mix64(self.state)
    }

    /// Uniform in `[0, bound)`, see [`bounded`].
    pub(super) fn next_int(&mut self, bound: u32) -> u32 {
        bounded(self.next_u64(), bound)
    }

    /// A random lowercase ASCII letter.
    fn next_letter(&mut self) -> char {
        // The draw is < 26, so the cast and the addition cannot overflow.
        char::from(b'a' + self.next_int(ALPHABET_LEN) as u8)
    }
}

/// The random stream of one bid, all of whose values are computed up front.
///
/// Which draw a field uses depends on earlier draws (a cold auction or bidder takes one more), so drawing one
/// value after the other makes a chain of dependent multiplications (~100 cycles per bid), and branching on
/// the random choices mispredicts on a quarter to a half of the bids. The values do not depend on each other,
/// though: draw `k` is `mix64(state + k * GOLDEN)`. So all of them are computed at once (independent
/// multiplications the CPU overlaps), and consuming a draw shifts the window of the draws ahead: by a
/// constant (a renaming of registers, no code) or, for a draw that a random choice may skip, by a conditional
/// move per value, never by a branch or a memory access at a computed index.
struct BidDraws {
    /// The next draws of the bid's `SplitMix64` stream, the next one first; the tail is stale once consumed.
    ahead: [u64; BID_DRAWS_MAX],
}

impl BidDraws {
    /// The stream of bid `b`, seeded with `mix64(seed + b * GOLDEN)` as in the reference.
    #[inline]
    fn new(seed: u64, b: u64) -> Self {
        let mut rng = SplitMix64::new(mix64(seed.wrapping_add(b.wrapping_mul(GOLDEN))));
        BidDraws { ahead: std::array::from_fn(|_| rng.next_u64()) }
    }

    /// The next 64 random bits.
    #[inline]
    fn next_u64(&mut self) -> u64 {
        let bits = self.ahead[0];
        self.shift_if(true);
        bits
    }

    /// Uniform in `[0, bound)`, see [`bounded`].
    #[inline]
    fn next_int(&mut self, bound: u32) -> u32 {
        bounded(self.next_u64(), bound)
    }

    /// What `next_int(bound)` would return, without consuming it: with [`Self::advance_if`], a caller computes
    /// a draw it may not use and selects it or not without a branch.
    #[inline]
    fn peek_int(&self, bound: u32) -> u32 {
        bounded(self.ahead[0], bound)
    }

    /// Consumes the draw that [`Self::peek_int`] returned if `used`; leaves the stream unchanged otherwise.
    #[inline]
    fn advance_if(&mut self, used: bool) {
        self.shift_if(used);
    }

    /// Drops the next draw if `by_one`. Every index is a constant once inlined, so the array lives in
    /// registers and the shift is one select per value.
    #[inline]
    fn shift_if(&mut self, by_one: bool) {
        let ahead = self.ahead;
        self.ahead = std::array::from_fn(|i| {
            let next = ahead.get(i + 1).copied().unwrap_or(ahead[i]);
            blend(by_one, ahead[i], next)
        });
    }
}

/// Java's `Integer.reverse(i)` for a 32-bit `i`, then the absolute value of the signed result, as the
/// reference does with Python's `abs` (so `i32::MIN` becomes 2147483648, not Java's negative `Math.abs`).
fn channel_id(i: u32) -> u32 {
    (i.reverse_bits() as i32).unsigned_abs()
}

/// `Math.round` for the positive doubles of this generator: `floor(x + 0.5)`. For `x + 0.5 >= 0` truncation
/// is floor, and the cast is one instruction where `f64::floor` is a library call on baseline x86-64.
#[inline]
fn java_round(x: f64) -> i64 {
    (x + 0.5) as i64
}

/// The reference's price for exponent `e`: `round(10^e * 100)` with its exact floating-point operations.
/// `powf` is the platform's `pow`, the same function Python's `**` calls, so the result is bit-identical; it
/// is only called for the rare bids that [`Tables::price`] cannot decide faster.
fn price_exact(e: f64) -> i64 {
    java_round(10.0f64.powf(e) * MIN_PRICE)
}

/// Unsigned division by a divisor fixed at start-up, as a multiplication: a 64-bit `div` is 10 to 40 cycles
/// and not pipelined, and every bid divides by the event rate.
#[derive(Debug, Clone, Copy)]
struct Divisor {
    /// The divisor, >= 1.
    d: u64,
    /// `floor((2^64 - 1) / d)`, so `n * m / 2^64` is in `(n / d - 1, n / d]` for every `n < 2^64`.
    m: u64,
}

impl Divisor {
    /// Prepares division by `d`, taking 0 as 1.
    fn new(d: u64) -> Self {
        let d = d.max(1);
        Divisor { d, m: u64::MAX / d }
    }

    /// `n / d`: the estimate `n * m / 2^64` is the quotient or one less, so one compare corrects it.
    #[inline]
    fn divide(self, n: u64) -> u64 {
        let estimate = ((u128::from(n) * u128::from(self.m)) >> 64) as u64;
        let remainder = n - estimate * self.d;
        estimate + u64::from(remainder >= self.d)
    }
}

/// `if choose_b { b } else { a }` computed with a mask rather than an `if`. Given an `if` between two values
/// of which one needs a division (even by a constant), LLVM emits a branch to skip the division, and a branch
/// on a random choice mispredicts on a quarter to a half of the bids (~15 cycles each).
#[inline]
fn blend(choose_b: bool, a: u64, b: u64) -> u64 {
    a.wrapping_add(b.wrapping_sub(a) & u64::from(choose_b).wrapping_neg())
}

/// A channel's name and URL, stored side by side so one bid's lookup touches one cache line.
#[derive(Debug, PartialEq, Eq)]
struct Channel {
    /// `Google`, ... for hot channels, pre-formatted `channel-N` otherwise.
    name: Box<str>,
    /// The channel's fixed URL.
    url: Box<str>,
}

/// Everything that is the same for all bids of a seed, built once (a few milliseconds) and shared by all
/// generators of that seed, so that [`Generator::bid`] only looks strings up and never allocates.
pub struct Tables {
    /// The seed the tables were drawn from.
    seed: u64,
    /// 1 MiB of random lowercase letters (ASCII, so every slice is UTF-8); `extra` is a slice of it.
    pub(super) pool: Box<[u8]>,
    /// `channel-0 .. channel-9999` with their URLs, then the 4 hot channels in the order of [`HOT_CHANNELS`]:
    /// one table, so that choosing between hot and other channels is arithmetic on the index, not a branch.
    channels: Box<[Channel]>,
    /// `100 * 10^(k / 256)` for `k` in `0..1536`: prices for exponents on a grid, which a short polynomial
    /// carries to any exponent without calling `pow` (~25 ns, as much as all the rest of a bid).
    price_steps: Box<[f64]>,
}

impl Tables {
    /// Builds the tables of `seed` from one `SplitMix64` stream, in the reference's order: the pool, the hot
    /// URLs, then the channel URLs.
    #[must_use]
    pub fn new(seed: u64) -> Tables {
        let mut rng = SplitMix64::new(seed ^ TABLES_SALT);
        let pool = random_letters(&mut rng, POOL_LEN).into_bytes().into_boxed_slice();
        // The reference draws the hot channels' URLs first.
        let hot: Vec<Channel> = HOT_CHANNELS
            .iter()
            .map(|&name| Channel { name: name.into(), url: base_url(&mut rng).into_boxed_str() })
            .collect();
        let mut channels: Vec<Channel> = (0..CHANNELS)
            .map(|i| Channel {
                name: format!("channel-{i}").into_boxed_str(),
                url: channel_url(&mut rng, i).into_boxed_str(),
            })
            .collect();
        channels.extend(hot);
        let price_steps =
            (0..PRICE_STEPS).map(|k| 10.0f64.powf(k as f64 / f64::from(PRICE_STEPS_PER_DECADE)) * MIN_PRICE).collect();
        Tables { seed, pool, channels: channels.into_boxed_slice(), price_steps }
    }

    /// The price drawn from `bits`: exactly the reference's `java_round(10^e * 100)` for
    /// `e = next_double * 6`, which it computes with `pow`. [`Self::price_approx`] gives `10^e * 100` within
    /// 5e-15; if everything within [`PRICE_FAST_MARGIN`] of it rounds to the same integer, so does the
    /// reference's value, else (rarely: near `n + 0.5`) the reference's own formula decides.
    #[inline]
    pub(super) fn price(&self, bits: u64) -> i64 {
        let approx = self.price_approx(bits);
        let low = java_round(approx * (1.0 - PRICE_FAST_MARGIN));
        let high = java_round(approx * (1.0 + PRICE_FAST_MARGIN));
        if low == high {
            low
        } else {
            price_exact(unit_double(bits) * PRICE_DECADES)
        }
    }

    /// `10^e * 100` within 5e-15 relative, for the reference's exponent `e = fl(6 m / 2^53)` (`m` the top 53
    /// bits). With `6 m / 2^53 = k / 256 + r` exactly (integer arithmetic), `100 * 10^(k / 256)` comes from
    /// the table and `10^r = exp(r ln 10)` from its Taylor series to degree 5 (`r ln 10 < 0.009`, so the rest
    /// is below 1e-15). Using the exact `6 m / 2^53` rather than the rounded `e` costs at most 1e-15 (half an
    /// ulp of `e`, times ln 10), and saves the float conversions from the start of the dependency chain.
    #[inline]
    fn price_approx(&self, bits: u64) -> f64 {
        /// 1/n! for n = 2..=5, the Taylor coefficients of `exp`.
        const C2: f64 = 1.0 / 2.0;
        const C3: f64 = 1.0 / 6.0;
        const C4: f64 = 1.0 / 24.0;
        const C5: f64 = 1.0 / 120.0;
        /// Fractional bits of `m * 6 * 256`, i.e. of the exponent in steps.
        const FRACTION_BITS: u32 = 53;
        /// `ln 10 / 2^(53 + 8)`: turns the fraction of a step into `r ln 10` (a power-of-two scaling, exact).
        const LN_10_PER_FRACTION_UNIT: f64 = std::f64::consts::LN_10 / (1u64 << 61) as f64;
        let m = bits >> 11;
        // m < 2^53, so the product < 2^64.
        let steps = m * (6 * u64::from(PRICE_STEPS_PER_DECADE));
        let k = steps >> FRACTION_BITS;
        let fraction = steps & ((1u64 << FRACTION_BITS) - 1);
        let z = fraction as f64 * LN_10_PER_FRACTION_UNIT;
        // Estrin's scheme: short parallel dependency chains instead of Horner's one long one.
        let z2 = z * z;
        let exp_z = (1.0 + z) + z2 * ((C2 + z * C3) + z2 * (C4 + z * C5));
        self.price_steps[k as usize] * exp_z
    }

    /// The channel: a hot one (1 in 2) or one of the 10,000. Both kinds take one more draw, so the random
    /// choice only selects the bound and the start of the range in [`Self::channels`], without a branch.
    #[inline]
    fn draw_channel(&self, draws: &mut BidDraws) -> &Channel {
        /// Number of hot channels.
        const HOT: u32 = HOT_CHANNELS.len() as u32;
        let hot = draws.next_int(HOT_CHANNEL_RATIO) > 0;
        let bound = blend(hot, u64::from(CHANNELS), u64::from(HOT)) as u32;
        let first = blend(hot, 0, u64::from(CHANNELS));
        &self.channels[(first + u64::from(draws.next_int(bound))) as usize]
    }

    /// `extra`: its length is drawn, then its offset within the pool.
    #[inline]
    fn draw_extra(&self, draws: &mut BidDraws) -> &[u8] {
        let len = EXTRA_LEN_MIN + draws.next_int(EXTRA_LEN_CHOICES);
        let offset = draws.next_int(POOL_LEN - len);
        // offset + len < POOL_LEN: the slice is in bounds.
        &self.pool[offset as usize..(offset + len) as usize]
    }
}

/// A summary: the tables themselves are over 1 MiB of text.
impl std::fmt::Debug for Tables {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tables")
            .field("seed", &self.seed)
            .field("pool_bytes", &self.pool.len())
            .field("channels", &self.channels.len())
            .finish_non_exhaustive()
    }
}

/// `len` random lowercase letters.
fn random_letters(rng: &mut SplitMix64, len: u32) -> String {
    (0..len).map(|_| rng.next_letter()).collect()
}

/// A random word of 3 to 5 letters (length drawn first).
fn word(rng: &mut SplitMix64) -> String {
    let len = URL_WORD_LEN_MIN + rng.next_int(URL_WORD_LEN_CHOICES);
    random_letters(rng, len)
}

/// `https://www.nexmark.com/<word>/<word>/<word>/item.htm?query=1`, words drawn left to right.
fn base_url(rng: &mut SplitMix64) -> String {
    let (a, b, c) = (word(rng), word(rng), word(rng));
    format!("https://www.nexmark.com/{a}/{b}/{c}/item.htm?query=1")
}

/// The URL of non-hot channel `i`: a base URL, then with probability 9/10 a `&channel_id=` parameter.
fn channel_url(rng: &mut SplitMix64, i: u32) -> String {
    let mut url = base_url(rng);
    if rng.next_int(URL_CHANNEL_ID_RATIO) > 0 {
        url.push_str("&channel_id=");
        url.push_str(&channel_id(i).to_string());
    }
    url
}

/// One bid, borrowing its strings from the tables: no heap allocation per bid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bid<'t> {
    /// Auction id (>= 1000); half of the bids go to the current hot auction.
    pub auction: i64,
    /// Bidder id: Nexmark's hot/cold people (>= 1000), or uniform over `[0, key_space)`.
    pub bidder: i64,
    /// Price in cents, log-uniform over 100 .. 10^8.
    pub price: i64,
    /// The channel entry: read through [`Bid::channel`] and [`Bid::url`], so that a query that needs neither
    /// does not touch the 480 KiB channel table (a cache miss per bid).
    channel_entry: &'t Channel,
    /// Event time in epoch milliseconds.
    pub date_time_ms: i64,
    /// 54 to 81 random ASCII letters. Bytes, not `str`: slicing a `str` reads the pool to check character boundaries, a cache
    /// miss per bid even for queries that never read `extra`.
    pub extra: &'t [u8],
}

impl<'t> Bid<'t> {
    /// Channel name: a hot channel or `channel-N`.
    #[inline]
    pub fn channel(&self) -> &'t str {
        &self.channel_entry.name
    }

    /// The channel's URL.
    #[inline]
    pub fn url(&self) -> &'t str {
        &self.channel_entry.url
    }

    /// The address of the channel entry, to prefetch it.
    #[inline]
    pub fn channel_addr(&self) -> *const u8 {
        (self.channel_entry as *const Channel).cast()
    }
}

/// Generates any bid of the stream of one [`GeneratorConfig`]; cheap to create, one per split.
#[derive(Debug, Clone)]
pub struct Generator {
    /// The stream's parameters.
    cfg: GeneratorConfig,
    /// `cfg.event_rate` (0 taken as 1), prepared for division.
    event_rate: Divisor,
    /// The shared tables of `cfg.seed`.
    tables: Arc<Tables>,
}

impl Generator {
    /// A generator for `cfg`; `tables` must have been built with `Tables::new(cfg.seed)` for the stream to be
    /// the reference's (it is the caller's to share one `Tables` between the splits of a source).
    #[must_use]
    pub fn new(cfg: GeneratorConfig, tables: Arc<Tables>) -> Generator {
        debug_assert_eq!(tables.seed, cfg.seed, "tables built for another seed");
        Generator { cfg, event_rate: Divisor::new(cfg.event_rate), tables }
    }

    /// Bid number `b`: a pure function of `b` and the config, drawn in the reference's order (auction,
    /// bidder, price, channel, extra).
    #[inline]
    #[must_use]
    pub fn bid(&self, b: u64) -> Bid<'_> {
        let mut draws = BidDraws::new(self.cfg.seed, b);
        let epoch = b / BIDS_PER_EPOCH;
        let auction = draw_auction(&mut draws, epoch);
        let bidder = self.draw_bidder(&mut draws, epoch);
        let price = self.tables.price(draws.next_u64());
        let channel = self.tables.draw_channel(&mut draws);
        let extra = self.tables.draw_extra(&mut draws);
        Bid {
            auction: auction as i64,
            bidder: bidder as i64,
            price,
            channel_entry: channel,
            date_time_ms: self.date_time_ms(b),
            extra,
        }
    }

    /// The event time of bid `b`, `BASE_TIME_MS + b * 1000 / event_rate` (integer division), without drawing
    /// anything: what a source needs for watermarks and rate limiting.
    #[inline]
    #[must_use]
    pub fn date_time_ms(&self, b: u64) -> i64 {
        let offset_ms = match b.checked_mul(MS_PER_S) {
            Some(ms) => self.event_rate.divide(ms),
            // Only for b > 1.8e16, far beyond any run: exact in 128 bits, saturating if it cannot be a date.
            None => {
                let ms = u128::from(b) * u128::from(MS_PER_S);
                u64::try_from(ms / u128::from(self.event_rate.d)).unwrap_or(u64::MAX)
            }
        };
        BASE_TIME_MS.saturating_add_unsigned(offset_ms)
    }

    /// The bidder: uniform over the key space if one is set, else Nexmark's hot bidder (3 in 4) or one of the
    /// active people (one more draw), selected without a branch as in [`draw_auction`].
    #[inline]
    fn draw_bidder(&self, draws: &mut BidDraws, epoch: u64) -> u64 {
        if self.cfg.key_space > 0 {
            return bounded_wide(draws.next_u64(), self.cfg.key_space);
        }
        let last_person = epoch;
        let hot = draws.next_int(HOT_BIDDER_RATIO) > 0;
        let hot_person = last_person / HOT_ID_ROUNDING * HOT_ID_ROUNDING + 1;
        let num_people = last_person + 1;
        let active = num_people.min(ACTIVE_PEOPLE);
        // active + FUTURE_IDS <= 1010: the cast is lossless.
        let cold_person = num_people - active + u64::from(draws.peek_int((active + FUTURE_IDS) as u32));
        draws.advance_if(!hot);
        FIRST_ID + blend(hot, cold_person, hot_person)
    }
}

/// The auction: the hot one (1 in 2) or one of the auctions in flight (one more draw). Both are computed and
/// one is selected, so that the random choice is not a mispredicted branch.
#[inline]
fn draw_auction(draws: &mut BidDraws, epoch: u64) -> u64 {
    let last_auction = epoch * AUCTIONS_PER_EPOCH + (AUCTIONS_PER_EPOCH - 1);
    let hot = draws.next_int(HOT_AUCTION_RATIO) > 0;
    let hot_auction = last_auction / HOT_ID_ROUNDING * HOT_ID_ROUNDING;
    let lo = last_auction.saturating_sub(AUCTIONS_IN_FLIGHT);
    // last_auction - lo + 1 + FUTURE_IDS <= 111: the cast is lossless.
    let cold_auction = lo + u64::from(draws.peek_int((last_auction - lo + 1 + FUTURE_IDS) as u32));
    draws.advance_if(!hot);
    FIRST_ID + blend(hot, cold_auction, hot_auction)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bids 0..999 of the reference for seed 42 and the default config.
    const VECTORS_DEFAULT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/nexmark/vectors-seed42.tsv");

    /// The same with `key_space = 1_000_000`.
    const VECTORS_KEYSPACE_1M: &str =
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/nexmark/vectors-seed42-keyspace1M.tsv");

    /// Rows in each vector file.
    const VECTOR_ROWS: usize = 1000;

    /// A generator for `cfg` with fresh tables.
    fn generator(cfg: GeneratorConfig) -> Generator {
        Generator::new(cfg, Arc::new(Tables::new(cfg.seed)))
    }

    /// One bid as the reference prints it: `b, auction, bidder, price, channel, url, dateTime, extra`.
    fn columns(b: u64, bid: &Bid<'_>) -> [String; 8] {
        [
            b.to_string(),
            bid.auction.to_string(),
            bid.bidder.to_string(),
            bid.price.to_string(),
            bid.channel().to_string(),
            bid.url().to_string(),
            bid.date_time_ms.to_string(),
            String::from_utf8_lossy(bid.extra).into_owned(),
        ]
    }

    /// Compares every column of every row of a vector file with the generator.
    fn check_vectors(path: &str, cfg: GeneratorConfig) {
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
        let generator = generator(cfg);
        let mut rows = 0;
        for (b, line) in (0u64..).zip(text.lines()) {
            let expected: Vec<&str> = line.split('\t').collect();
            assert_eq!(expected.len(), 8, "{path}: row {b}: expected 8 columns");
            let got = columns(b, &generator.bid(b));
            assert_eq!(got.as_slice(), expected.as_slice(), "{path}: row {b}");
            rows += 1;
        }
        assert_eq!(rows, VECTOR_ROWS, "{path}: rows");
    }

    #[test]
    fn matches_reference_vectors_seed42() {
        check_vectors(VECTORS_DEFAULT, GeneratorConfig::default());
    }

    #[test]
    fn matches_reference_vectors_seed42_keyspace_1m() {
        let cfg = GeneratorConfig { key_space: 1_000_000, ..GeneratorConfig::default() };
        check_vectors(VECTORS_KEYSPACE_1M, cfg);
    }

    #[test]
    fn date_time_ms_matches_bid() {
        let tables = Arc::new(Tables::new(DEFAULT_SEED));
        for event_rate in [1, 7, 1_000, 1_000_000, 3_000_001, u64::MAX] {
            let cfg = GeneratorConfig { event_rate, ..GeneratorConfig::default() };
            let generator = Generator::new(cfg, Arc::clone(&tables));
            for b in [0, 1, 45, 46, 999, 1_000_001, 123_456_789_012, u64::MAX / 1000 + 1] {
                let exact = i128::from(BASE_TIME_MS) + i128::from(b) * 1000 / i128::from(event_rate);
                let expected = i64::try_from(exact).unwrap_or(i64::MAX);
                assert_eq!(generator.date_time_ms(b), expected, "b={b} rate={event_rate}");
                assert_eq!(generator.date_time_ms(b), generator.bid(b).date_time_ms);
            }
        }
    }

    #[test]
    fn zero_event_rate_is_treated_as_one() {
        let generator = generator(GeneratorConfig { event_rate: 0, ..GeneratorConfig::default() });
        assert_eq!(generator.date_time_ms(3), BASE_TIME_MS + 3000);
    }

    #[test]
    fn bids_do_not_depend_on_generation_order() {
        const BIDS: u64 = 10_000;
        const SPLITS: u64 = 7;
        let generator = generator(GeneratorConfig::default());
        let in_sequence: Vec<Bid<'_>> = (0..BIDS).map(|b| generator.bid(b)).collect();
        let mut by_split: Vec<Option<Bid<'_>>> = vec![None; in_sequence.len()];
        for j in 0..SPLITS {
            for b in (j..BIDS).step_by(SPLITS as usize) {
                by_split[b as usize] = Some(generator.bid(b));
            }
        }
        for (b, bid) in in_sequence.iter().enumerate() {
            assert_eq!(by_split[b].as_ref(), Some(bid), "b={b}");
        }
        // Another split's generator, with its own tables, gives the same bids too, in any order.
        let other = self::generator(GeneratorConfig::default());
        for b in (0..BIDS).rev() {
            assert_eq!(other.bid(b), in_sequence[b as usize], "b={b}");
        }
    }

    #[test]
    fn channel_id_is_abs_of_java_integer_reverse() {
        assert_eq!(channel_id(0), 0);
        assert_eq!(channel_id(1), 2_147_483_648);
        assert_eq!(channel_id(2), 1_073_741_824);
        assert_eq!(channel_id(3), 1_073_741_824);
        assert_eq!(channel_id(9_999), 253_493_248);
    }

    #[test]
    fn fast_price_equals_pow_price() {
        check_fast_price(1_000_000, 99_991);
    }

    /// Checks [`Tables::price`] against the reference's formula for `random` random exponents, the ends of
    /// the range, and every exponent around the rounding boundaries `n + 0.5` for every `boundary_step`-th
    /// price `n`.
    fn check_fast_price(random: u64, boundary_step: usize) {
        /// Exponents checked on each side of a boundary: the prices of consecutive exponents differ by
        /// ~1.5e-15 relative, so [`PRICE_FAST_MARGIN`] spans ~600 of them; this covers the margin and beyond,
        /// where the fast path decides alone and would go wrong first if its error bound did not hold.
        const AROUND: u64 = 1024;
        let tables = Tables::new(DEFAULT_SEED);
        let check = |bits: u64| {
            let exact = price_exact(unit_double(bits) * PRICE_DECADES);
            assert_eq!(tables.price(bits), exact, "bits={bits:#x}");
        };
        let mut rng = SplitMix64::new(7);
        for _ in 0..random {
            check(rng.next_u64());
        }
        for bits in [0, 1 << 11, u64::MAX, u64::MAX - (1 << 11)] {
            check(bits);
        }
        for n in (100..100_000_000).step_by(boundary_step) {
            let boundary = (f64::from(n) + 0.5) / MIN_PRICE;
            let m = (boundary.log10() / PRICE_DECADES / UNIT_DOUBLE_ULP) as u64;
            for m in m - AROUND..m + AROUND {
                check(m << 11);
            }
        }
    }

    #[test]
    fn divisor_equals_division() {
        let mut rng = SplitMix64::new(11);
        let divisors = [1, 2, 3, 7, 1_000, 1_000_000, 3_000_001, 1 << 32, u64::MAX / 3, u64::MAX];
        for d in divisors {
            let divisor = Divisor::new(d);
            for n in [0, 1, d - 1, d, d.wrapping_add(1), u64::MAX - 1, u64::MAX] {
                assert_eq!(divisor.divide(n), n / d, "{n} / {d}");
            }
            for _ in 0..10_000 {
                let n = rng.next_u64() >> (rng.next_int(64));
                assert_eq!(divisor.divide(n), n / d, "{n} / {d}");
            }
        }
    }

    #[test]
    fn bid_fields_stay_in_range() {
        let generator = generator(GeneratorConfig::default());
        for b in 0..100_000 {
            let bid = generator.bid(b);
            assert!((100..=100_000_000).contains(&bid.price), "b={b}");
            assert!((54..=81).contains(&bid.extra.len()), "b={b}");
            assert!(bid.auction >= 1000 && bid.bidder >= 1000, "b={b}");
        }
    }
}
