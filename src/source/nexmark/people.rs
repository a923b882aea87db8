//! The Nexmark `person` and `auction` tables: our own deterministic variant of Nexmark's `PersonGenerator`
//! and `AuctionGenerator`, built like the bid stream of [`super::gen`].
//!
//! Nexmark interleaves 1 person, 3 auctions and 46 bids per 50-event epoch and draws them all from one
//! unseeded `SplittableRandom`, so its values cannot be reproduced. Here, as for bids, every row is a pure
//! function of its number and the seed, so any split can generate any range of rows:
//! - person `p` (id `1000 + p`) belongs to epoch `p`, auction `a` (id `1000 + a`) to epoch `a / 3`; both take
//!   the event time of bid `46 e`, the first bid of their epoch `e`, so the three tables advance together in
//!   event time;
//! - person `p` draws from its own `SplitMix64` stream seeded with `mix64(seed + p * GOLDEN) ^ PERSON_SALT`,
//!   auction `a` from `mix64(seed + a * GOLDEN) ^ AUCTION_SALT`: the salts keep them from reusing the stream
//!   of bid `p` or `a`;
//! - the fields are drawn in the order of Nexmark's generators, with its constants and rules.
//!
//! Where this deliberately differs from the Java generator:
//! - `extra` is a slice of the bid stream's 1 MiB pool of lowercase letters ([`Tables`]); Flink's
//!   `nextExactString` builds it with Java's signed remainder, which also yields the characters `H..a`;
//! - an auction's expiry horizon counts bids, not events (see [`AUCTION_HORIZON_BIDS`]);
//! - the hot seller of epoch `e` is `e / 100 * 100`, Nexmark's rule, with the epoch in place of Nexmark's
//!   event-derived last person id (the same number).
//!
//! The executable spec is `tests/data/nexmark/gen_people_reference.py`; the tests below check this module
//! against the rows it wrote to `tests/data/nexmark/{persons,auctions}-seed42.tsv`.
//!
//! A row needs no heap allocation: the drawn strings are at most 99 bytes and are stored inline, and `extra`
//! borrows from the pool.

use super::gen::{
    bounded_wide, mix64, SplitMix64, Tables, ACTIVE_PEOPLE, ALPHABET_LEN, AUCTIONS_PER_EPOCH, BASE_TIME_MS,
    BIDS_PER_EPOCH, FIRST_ID, FUTURE_IDS, GOLDEN, HOT_ID_ROUNDING, MS_PER_S, POOL_LEN,
};
use crate::record::BatchBuilder;

/// The nexmark `person` table's columns (Flink Nexmark's), in the order [`write_person`] writes them.
pub const NEXMARK_PERSON_SCHEMA: &str = "id BIGINT, name VARCHAR, emailAddress VARCHAR, creditCard VARCHAR, \
     city VARCHAR, state VARCHAR, dateTime TIMESTAMP(3), extra VARCHAR";

/// The nexmark `auction` table's columns (Flink Nexmark's), in the order [`write_auction`] writes them.
pub const NEXMARK_AUCTION_SCHEMA: &str = "id BIGINT, itemName VARCHAR, description VARCHAR, initialBid BIGINT, \
     reserve BIGINT, dateTime TIMESTAMP(3), expires TIMESTAMP(3), seller BIGINT, category BIGINT, extra VARCHAR";

/// Column indexes of the person table (see [`NEXMARK_PERSON_SCHEMA`]).
mod person_col {
    pub(super) const ID: usize = 0;
    pub(super) const NAME: usize = 1;
    pub(super) const EMAIL_ADDRESS: usize = 2;
    pub(super) const CREDIT_CARD: usize = 3;
    pub(super) const CITY: usize = 4;
    pub(super) const STATE: usize = 5;
    pub(super) const DATE_TIME: usize = 6;
    pub(super) const EXTRA: usize = 7;
}

/// Column indexes of the auction table (see [`NEXMARK_AUCTION_SCHEMA`]).
mod auction_col {
    pub(super) const ID: usize = 0;
    pub(super) const ITEM_NAME: usize = 1;
    pub(super) const DESCRIPTION: usize = 2;
    pub(super) const INITIAL_BID: usize = 3;
    pub(super) const RESERVE: usize = 4;
    pub(super) const DATE_TIME: usize = 5;
    pub(super) const EXPIRES: usize = 6;
    pub(super) const SELLER: usize = 7;
    pub(super) const CATEGORY: usize = 8;
    pub(super) const EXTRA: usize = 9;
}

/// Salt of the person streams: the first 64 bits of the fractional part of √2 (SHA-512's first initial hash
/// word), a number with nothing up its sleeve. Without a salt person `p` would draw bid `p`'s values; a
/// full-width salt makes the two streams' states differ by a pseudo-random amount, so they never overlap.
const PERSON_SALT: u64 = 0x6A09_E667_F3BC_C908;

/// Salt of the auction streams: the fractional part of √3 (SHA-512's second initial hash word), distinct
/// from [`PERSON_SALT`] so that auction `n` does not reuse person `n`'s stream either.
const AUCTION_SALT: u64 = 0xBB67_AE85_84CA_A73B;

/// Nexmark's `FIRST_NAMES`; a person's name is a first and a last name, drawn independently.
const FIRST_NAMES: [&str; 11] =
    ["Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter"];

/// Nexmark's `LAST_NAMES`.
const LAST_NAMES: [&str; 9] = ["Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris"];

/// Nexmark's `US_CITIES`; city and state are drawn independently, as in Nexmark.
const US_CITIES: [&str; 10] =
    ["Phoenix", "Los Angeles", "San Francisco", "Boise", "Portland", "Bend", "Redmond", "Seattle", "Kent", "Cheyenne"];

/// Nexmark's `US_STATES`.
const US_STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];

/// Nexmark's `MIN_STRING_LENGTH`: a random string has 3 to `max_len - 1` characters before trimming.
const STRING_MIN_LEN: u32 = 3;

/// 1 in 13 characters of a random string is a space (Nexmark's `nextString`).
const STRING_SPACE_RATIO: u32 = 13;

/// The e-mail's user part is `nextString(7)`: 3 to 6 characters before trimming.
const EMAIL_USER_MAX_LEN: u32 = 7;

/// The e-mail's domain is `nextString(5)`: 3 to 4 characters before trimming.
const EMAIL_DOMAIN_MAX_LEN: u32 = 5;

/// What follows the domain of every e-mail address.
const EMAIL_SUFFIX: &[u8] = b".com";

/// A credit card number is 4 groups of 4 digits separated by single spaces, `%04d` of a draw below 10,000.
const CREDIT_CARD_GROUPS: usize = 4;

/// Values of one credit card group: `0000 .. 9999`.
const CREDIT_CARD_GROUP_VALUES: u32 = 10_000;

/// Digits of one credit card group (the decimal width of [`CREDIT_CARD_GROUP_VALUES`] - 1).
const CREDIT_CARD_GROUP_DIGITS: usize = 4;

/// Length of a credit card number: `dddd dddd dddd dddd`.
const CREDIT_CARD_LEN: usize = CREDIT_CARD_GROUPS * (CREDIT_CARD_GROUP_DIGITS + 1) - 1;

/// Nexmark's size estimate of a person's id, counted with the strings' lengths to size `extra`.
const PERSON_ID_BYTES: usize = 8;

/// Nexmark's `avgPersonByteSize`: `extra` makes person rows 200 bytes on average by Nexmark's count.
const AVG_PERSON_BYTES: u32 = 200;

/// Nexmark's size estimate of an auction's id, counted with the strings' lengths to size `extra`.
const AUCTION_ID_BYTES: usize = 8;

/// Nexmark's size estimate of an auction's other numbers: 5 of 8 bytes each.
const AUCTION_NUMBERS_BYTES: usize = 40;

/// Nexmark's `avgAuctionByteSize`: `extra` makes auction rows 500 bytes on average by Nexmark's count.
const AVG_AUCTION_BYTES: u32 = 500;

/// Nexmark's `nextExtra` spreads the length of `extra` over `d ± round(d * 0.2)`, `d` the missing bytes;
/// `(d + 2) / 5` is `round(d / 5)`, half up, in integers (`d / 5` is never exactly `n + 1/2`).
const EXTRA_SPREAD_DIVISOR: u32 = 5;

/// Nexmark's `hotSellersRatio`: 3 in 4 auctions are sold by the hot seller.
const HOT_SELLER_RATIO: u32 = 4;

/// Nexmark's `FIRST_CATEGORY_ID`.
const FIRST_CATEGORY_ID: i64 = 10;

/// Nexmark's `NUM_CATEGORIES`: categories are 10 to 14.
const CATEGORIES: u32 = 5;

/// An item's name is `nextString(20)`: 3 to 19 characters before trimming.
const ITEM_NAME_MAX_LEN: u32 = 20;

/// An item's description is `nextString(100)`: 3 to 99 characters before trimming.
const DESCRIPTION_MAX_LEN: u32 = 100;

/// An auction expires within twice the event time of this many bids: Nexmark's horizon is the time of
/// `100 * 50 / 3 = 1666` events (the events over which its 100 auctions in flight are created), and 46 of 50
/// events are bids here, so `1666 * 46 / 50 = 1532.7`, rounded.
const AUCTION_HORIZON_BIDS: u64 = 1_533;

/// The longest of `names`, so that buffer capacities follow the tables above.
const fn longest(names: &[&str]) -> usize {
    let mut max = 0;
    let mut i = 0;
    while i < names.len() {
        if names[i].len() > max {
            max = names[i].len();
        }
        i += 1;
    }
    max
}

/// Longest name: a first name, a space, a last name.
const NAME_CAP: usize = longest(&FIRST_NAMES) + 1 + longest(&LAST_NAMES);

/// Longest e-mail address: the longest user part, `@`, the longest domain, `.com`.
const EMAIL_CAP: usize =
    (EMAIL_USER_MAX_LEN - 1) as usize + 1 + (EMAIL_DOMAIN_MAX_LEN - 1) as usize + EMAIL_SUFFIX.len();

/// Longest item name.
const ITEM_NAME_CAP: usize = (ITEM_NAME_MAX_LEN - 1) as usize;

/// Longest description.
const DESCRIPTION_CAP: usize = (DESCRIPTION_MAX_LEN - 1) as usize;

/// A short ASCII string stored inline, so that a row needs no heap allocation. `N` is the longest string the
/// draws can make, so nothing is ever dropped by [`Text::push`].
#[derive(Clone, Copy, PartialEq, Eq)]
struct Text<const N: usize> {
    /// Bytes used, <= `N`.
    len: usize,
    bytes: [u8; N],
}

impl<const N: usize> Text<N> {
    /// The empty string.
    const EMPTY: Self = Text { len: 0, bytes: [0; N] };

    /// Appends `byte`; drops it if the text is full (which the capacities rule out).
    #[inline]
    fn push(&mut self, byte: u8) {
        debug_assert!(self.len < N, "a Text capacity is too small");
        if let Some(slot) = self.bytes.get_mut(self.len) {
            *slot = byte;
            self.len += 1;
        }
    }

    /// Appends `bytes`.
    fn extend(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.push(byte);
        }
    }

    /// The bytes used.
    #[inline]
    fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or(&self.bytes)
    }

    /// The text; always ASCII, so the check cannot fail.
    fn as_str(&self) -> &str {
        std::str::from_utf8(self.as_bytes()).unwrap_or("")
    }
}

impl<const N: usize> std::fmt::Debug for Text<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

/// One person, its strings inline or borrowed from the tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Person<'t> {
    /// `1000 + p`.
    pub id: i64,
    name: Text<NAME_CAP>,
    email_address: Text<EMAIL_CAP>,
    credit_card: Text<CREDIT_CARD_LEN>,
    /// One of Nexmark's 10 US cities.
    pub city: &'static str,
    /// One of Nexmark's 6 US states, drawn independently of the city.
    pub state: &'static str,
    /// Event time in epoch milliseconds: that of bid `46 p`.
    pub date_time_ms: i64,
    /// Lowercase letters that bring the row to ~200 bytes.
    pub extra: &'t [u8],
}

impl Person<'_> {
    /// `First Last`.
    pub fn name(&self) -> &str {
        self.name.as_str()
    }

    /// `user@domain.com`, user and domain random letters with possibly a space inside.
    pub fn email_address(&self) -> &str {
        self.email_address.as_str()
    }

    /// `dddd dddd dddd dddd`.
    pub fn credit_card(&self) -> &str {
        self.credit_card.as_str()
    }
}

/// One auction, its strings inline or borrowed from the tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Auction<'t> {
    /// `1000 + a`.
    pub id: i64,
    item_name: Text<ITEM_NAME_CAP>,
    description: Text<DESCRIPTION_CAP>,
    /// Price in cents, log-uniform over 100 .. 10^8 like a bid's.
    pub initial_bid: i64,
    /// `initial_bid` plus another such price.
    pub reserve: i64,
    /// Event time in epoch milliseconds: that of bid `46 (a / 3)`.
    pub date_time_ms: i64,
    /// After `date_time_ms`, within twice the event time of [`AUCTION_HORIZON_BIDS`] bids.
    pub expires_ms: i64,
    /// A person id: the epoch's hot seller (3 in 4) or one of the last 1000 people or the next 10.
    pub seller: i64,
    /// 10 to 14.
    pub category: i64,
    /// Lowercase letters that bring the row to ~500 bytes.
    pub extra: &'t [u8],
}

impl Auction<'_> {
    /// Random letters with possibly spaces inside.
    pub fn item_name(&self) -> &str {
        self.item_name.as_str()
    }

    /// Random letters with possibly spaces inside.
    pub fn description(&self) -> &str {
        self.description.as_str()
    }
}

/// The random stream of person or auction `n`: `SplitMix64` seeded with `mix64(seed + n * GOLDEN) ^ salt`.
fn row_rng(seed: u64, n: u64, salt: u64) -> SplitMix64 {
    SplitMix64::new(mix64(seed.wrapping_add(n.wrapping_mul(GOLDEN))) ^ salt)
}

/// Id `1000 + n`, saturating at `i64::MAX` for numbers no run reaches, rather than overflowing.
fn id(n: u64) -> i64 {
    i64::try_from(FIRST_ID.saturating_add(n)).unwrap_or(i64::MAX)
}

/// The event time of bid `b`, `BASE_TIME_MS + b * 1000 / event_rate` (integer division, 0 taken as 1), as
/// [`super::gen::Generator::date_time_ms`]; `b` is 128-bit so that the first bid of any epoch, and the bid
/// 1533 later, exist; saturating where it cannot be a date.
fn bid_date_time_ms(b: u128, event_rate: u64) -> i64 {
    // b < 2^71, so the product cannot overflow.
    let offset_ms = b * u128::from(MS_PER_S) / u128::from(event_rate.max(1));
    BASE_TIME_MS.saturating_add_unsigned(u64::try_from(offset_ms).unwrap_or(u64::MAX))
}

/// The number of the first bid of epoch `e`.
fn first_bid(e: u64) -> u128 {
    u128::from(e) * u128::from(BIDS_PER_EPOCH)
}

/// One of `names`, uniformly.
fn pick(rng: &mut SplitMix64, names: &[&'static str]) -> &'static str {
    // The tables are short constants: the length fits in u32, the draw is an index.
    let i = rng.next_int(names.len() as u32);
    names.get(i as usize).copied().unwrap_or("")
}

/// Nexmark's `nextString(max_len)`, appended to `out`: `3 + next_int(max_len - 3)` characters, each a space (1
/// in 13, one draw) or a lowercase letter (two draws), then trimmed of spaces at both ends like Java's `trim`.
fn draw_string<const N: usize>(rng: &mut SplitMix64, max_len: u32, out: &mut Text<N>) {
    let start = out.len;
    let len = STRING_MIN_LEN + rng.next_int(max_len.saturating_sub(STRING_MIN_LEN));
    for _ in 0..len {
        let byte = if rng.next_int(STRING_SPACE_RATIO) == 0 {
            b' '
        } else {
            // The draw is < 26: the cast and the addition cannot overflow.
            b'a' + rng.next_int(ALPHABET_LEN) as u8
        };
        // Leading spaces are not stored at all.
        if byte != b' ' || out.len > start {
            out.push(byte);
        }
    }
    while out.len > start && out.as_bytes().last() == Some(&b' ') {
        out.len -= 1;
    }
}

/// Nexmark's `nextExtra`: nothing if the row already has `avg` bytes (`current_size`), else a length uniform
/// in `[d - delta, d + delta)` with `d = avg - current_size` and `delta = round(d / 5)` (no draw if
/// `delta = 0`), then an offset; `extra` is that slice of the pool.
fn draw_extra<'t>(rng: &mut SplitMix64, tables: &'t Tables, current_size: usize, avg: u32) -> &'t [u8] {
    let Some(missing) = u32::try_from(current_size).ok().and_then(|size| avg.checked_sub(size)) else {
        return &[];
    };
    let delta = (missing + EXTRA_SPREAD_DIVISOR / 2) / EXTRA_SPREAD_DIVISOR;
    let spread = if delta == 0 { 0 } else { rng.next_int(2 * delta) };
    // missing <= avg <= 500, so the length is far below the pool's and offset + len below POOL_LEN.
    let len = missing - delta + spread;
    let offset = rng.next_int(POOL_LEN.saturating_sub(len));
    tables.pool.get(offset as usize..(offset + len) as usize).unwrap_or_default()
}

/// Person number `p` (id `1000 + p`) of the stream of `seed` with `event_rate` bids per event-time second,
/// drawn in Nexmark's order: name, e-mail, credit card, city, state, extra. `tables` must be built for
/// `seed` (`extra` is a slice of its pool).
#[must_use]
pub fn person(p: u64, tables: &Tables, event_rate: u64, seed: u64) -> Person<'_> {
    let mut rng = row_rng(seed, p, PERSON_SALT);
    let mut name = Text::EMPTY;
    name.extend(pick(&mut rng, &FIRST_NAMES).as_bytes());
    name.push(b' ');
    name.extend(pick(&mut rng, &LAST_NAMES).as_bytes());
    let mut email_address = Text::EMPTY;
    draw_string(&mut rng, EMAIL_USER_MAX_LEN, &mut email_address);
    email_address.push(b'@');
    draw_string(&mut rng, EMAIL_DOMAIN_MAX_LEN, &mut email_address);
    email_address.extend(EMAIL_SUFFIX);
    let mut credit_card = Text::EMPTY;
    for group in 0..CREDIT_CARD_GROUPS {
        if group > 0 {
            credit_card.push(b' ');
        }
        let value = rng.next_int(CREDIT_CARD_GROUP_VALUES);
        let mut place = CREDIT_CARD_GROUP_VALUES / 10;
        while place > 0 {
            // A decimal digit: the cast and the addition cannot overflow.
            credit_card.push(b'0' + (value / place % 10) as u8);
            place /= 10;
        }
    }
    let city = pick(&mut rng, &US_CITIES);
    let state = pick(&mut rng, &US_STATES);
    let size = PERSON_ID_BYTES + name.len + email_address.len + credit_card.len + city.len() + state.len();
    let extra = draw_extra(&mut rng, tables, size, AVG_PERSON_BYTES);
    Person {
        id: id(p),
        name,
        email_address,
        credit_card,
        city,
        state,
        date_time_ms: bid_date_time_ms(first_bid(p), event_rate),
        extra,
    }
}

/// Auction number `a` (id `1000 + a`) of the stream of `seed` with `event_rate` bids per event-time second,
/// drawn in Nexmark's order: seller, category, initial bid, expiry, item name, description, reserve, extra.
/// `tables` must be built for `seed` (`extra` is a slice of its pool).
#[must_use]
pub fn auction(a: u64, tables: &Tables, event_rate: u64, seed: u64) -> Auction<'_> {
    let mut rng = row_rng(seed, a, AUCTION_SALT);
    let epoch = a / AUCTIONS_PER_EPOCH;
    let date_time_ms = bid_date_time_ms(first_bid(epoch), event_rate);
    let seller = if rng.next_int(HOT_SELLER_RATIO) > 0 {
        epoch / HOT_ID_ROUNDING * HOT_ID_ROUNDING
    } else {
        // epoch <= u64::MAX / 3, so no overflow; active + FUTURE_IDS <= 1010 fits in u32.
        let num_people = epoch + 1;
        let active = num_people.min(ACTIVE_PEOPLE);
        num_people - active + u64::from(rng.next_int((active + FUTURE_IDS) as u32))
    };
    let category = FIRST_CATEGORY_ID + i64::from(rng.next_int(CATEGORIES));
    let initial_bid = tables.price(rng.next_u64());
    let horizon_ms =
        bid_date_time_ms(first_bid(epoch) + u128::from(AUCTION_HORIZON_BIDS), event_rate).abs_diff(date_time_ms);
    let length_ms = 1 + bounded_wide(rng.next_u64(), horizon_ms.saturating_mul(2).max(1));
    let expires_ms = date_time_ms.saturating_add_unsigned(length_ms);
    let mut item_name = Text::EMPTY;
    draw_string(&mut rng, ITEM_NAME_MAX_LEN, &mut item_name);
    let mut description = Text::EMPTY;
    draw_string(&mut rng, DESCRIPTION_MAX_LEN, &mut description);
    // Prices are at most 10^8: the sum cannot overflow.
    let reserve = initial_bid + tables.price(rng.next_u64());
    let size = AUCTION_ID_BYTES + item_name.len + description.len + AUCTION_NUMBERS_BYTES;
    let extra = draw_extra(&mut rng, tables, size, AVG_AUCTION_BYTES);
    Auction {
        id: id(a),
        item_name,
        description,
        initial_bid,
        reserve,
        date_time_ms,
        expires_ms,
        seller: id(seller),
        category,
        extra,
    }
}

/// Appends person `p` (see [`person`]) to `out`, a builder of [`NEXMARK_PERSON_SCHEMA`], as one row.
pub fn write_person(p: u64, tables: &Tables, event_rate: u64, seed: u64, out: &mut BatchBuilder) {
    let row = person(p, tables, event_rate, seed);
    out.push_int(person_col::ID, row.id);
    out.push_str(person_col::NAME, row.name.as_bytes());
    out.push_str(person_col::EMAIL_ADDRESS, row.email_address.as_bytes());
    out.push_str(person_col::CREDIT_CARD, row.credit_card.as_bytes());
    out.push_str(person_col::CITY, row.city.as_bytes());
    out.push_str(person_col::STATE, row.state.as_bytes());
    out.push_int(person_col::DATE_TIME, row.date_time_ms);
    out.push_str(person_col::EXTRA, row.extra);
    out.end_row();
}

/// Appends auction `a` (see [`auction`]) to `out`, a builder of [`NEXMARK_AUCTION_SCHEMA`], as one row.
pub fn write_auction(a: u64, tables: &Tables, event_rate: u64, seed: u64, out: &mut BatchBuilder) {
    let row = auction(a, tables, event_rate, seed);
    out.push_int(auction_col::ID, row.id);
    out.push_str(auction_col::ITEM_NAME, row.item_name.as_bytes());
    out.push_str(auction_col::DESCRIPTION, row.description.as_bytes());
    out.push_int(auction_col::INITIAL_BID, row.initial_bid);
    out.push_int(auction_col::RESERVE, row.reserve);
    out.push_int(auction_col::DATE_TIME, row.date_time_ms);
    out.push_int(auction_col::EXPIRES, row.expires_ms);
    out.push_int(auction_col::SELLER, row.seller);
    out.push_int(auction_col::CATEGORY, row.category);
    out.push_str(auction_col::EXTRA, row.extra);
    out.end_row();
}

#[cfg(test)]
mod tests {
    use super::super::gen::{Generator, GeneratorConfig};
    use super::*;
    use crate::record::{BatchView, DataType, Schema};
    use std::sync::Arc;

    /// Persons 0..999 of the reference for seed 42 and event rate 1M.
    const PERSONS_SEED42: &str =
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/nexmark/persons-seed42.tsv"));

    /// Auctions 0..999 of the reference for seed 42 and event rate 1M.
    const AUCTIONS_SEED42: &str =
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/nexmark/auctions-seed42.tsv"));

    /// Rows in each vector file.
    const VECTOR_ROWS: u64 = 1000;

    /// Seed and event rate of the vector files (the defaults).
    const SEED: u64 = 42;
    const EVENT_RATE: u64 = 1_000_000;

    /// A builder for `schema`.
    fn builder(schema: &str) -> BatchBuilder {
        BatchBuilder::new(&Schema::parse(schema).expect("the schema parses").types())
    }

    /// Row `row` of `view` as the reference prints it: every column, tab-separated, timestamps in epoch ms.
    fn tsv_row(view: &BatchView<'_>, types: &[DataType], row: usize) -> String {
        let columns: Vec<String> = types
            .iter()
            .enumerate()
            .map(|(col, ty)| match ty {
                DataType::Varchar => String::from_utf8(view.str(col, row).to_vec()).expect("UTF-8"),
                _ => view.int(col, row).to_string(),
            })
            .collect();
        columns.join("\t")
    }

    /// Writes rows `0..VECTOR_ROWS` with `write` into a batch of `schema` and compares every row with
    /// `expected`, a vector file of the reference.
    fn check_vectors(name: &str, schema: &str, expected: &str, write: impl Fn(u64, &Tables, &mut BatchBuilder)) {
        let tables = Tables::new(SEED);
        let mut out = builder(schema);
        for n in 0..VECTOR_ROWS {
            write(n, &tables, &mut out);
        }
        let types = out.types().to_vec();
        let batch = out.finish();
        let view = batch.view();
        assert_eq!(view.n_rows() as u64, VECTOR_ROWS, "{name}: rows written");
        let mut rows = 0;
        for (row, line) in expected.lines().enumerate() {
            assert_eq!(tsv_row(&view, &types, row), line, "{name}: row {row}");
            rows += 1;
        }
        assert_eq!(rows, VECTOR_ROWS, "{name}: rows in the file");
    }

    #[test]
    fn persons_match_reference_vectors_seed42() {
        check_vectors("persons-seed42.tsv", NEXMARK_PERSON_SCHEMA, PERSONS_SEED42, |p, tables, out| {
            write_person(p, tables, EVENT_RATE, SEED, out)
        });
    }

    #[test]
    fn auctions_match_reference_vectors_seed42() {
        check_vectors("auctions-seed42.tsv", NEXMARK_AUCTION_SCHEMA, AUCTIONS_SEED42, |a, tables, out| {
            write_auction(a, tables, EVENT_RATE, SEED, out)
        });
    }

    #[test]
    fn schemas_name_the_columns_in_write_order() {
        let person = Schema::parse(NEXMARK_PERSON_SCHEMA).expect("person schema");
        let columns = [
            ("id", person_col::ID, DataType::BigInt),
            ("name", person_col::NAME, DataType::Varchar),
            ("emailAddress", person_col::EMAIL_ADDRESS, DataType::Varchar),
            ("creditCard", person_col::CREDIT_CARD, DataType::Varchar),
            ("city", person_col::CITY, DataType::Varchar),
            ("state", person_col::STATE, DataType::Varchar),
            ("dateTime", person_col::DATE_TIME, DataType::Timestamp),
            ("extra", person_col::EXTRA, DataType::Varchar),
        ];
        assert_eq!(person.len(), columns.len());
        for (name, col, ty) in columns {
            assert_eq!(person.index_of(name), Some(col), "person.{name}");
            assert_eq!(person.fields[col].ty, ty, "person.{name}");
        }
        let auction = Schema::parse(NEXMARK_AUCTION_SCHEMA).expect("auction schema");
        let columns = [
            ("id", auction_col::ID, DataType::BigInt),
            ("itemName", auction_col::ITEM_NAME, DataType::Varchar),
            ("description", auction_col::DESCRIPTION, DataType::Varchar),
            ("initialBid", auction_col::INITIAL_BID, DataType::BigInt),
            ("reserve", auction_col::RESERVE, DataType::BigInt),
            ("dateTime", auction_col::DATE_TIME, DataType::Timestamp),
            ("expires", auction_col::EXPIRES, DataType::Timestamp),
            ("seller", auction_col::SELLER, DataType::BigInt),
            ("category", auction_col::CATEGORY, DataType::BigInt),
            ("extra", auction_col::EXTRA, DataType::Varchar),
        ];
        assert_eq!(auction.len(), columns.len());
        for (name, col, ty) in columns {
            assert_eq!(auction.index_of(name), Some(col), "auction.{name}");
            assert_eq!(auction.fields[col].ty, ty, "auction.{name}");
        }
    }

    #[test]
    fn rows_take_the_time_of_their_epochs_first_bid() {
        let tables = Arc::new(Tables::new(SEED));
        for event_rate in [1, 7, 1_000, 1_000_000, 3_000_001, u64::MAX] {
            let cfg = GeneratorConfig { seed: SEED, event_rate, key_space: 0 };
            let bids = Generator::new(cfg, Arc::clone(&tables));
            for e in [0, 1, 21, 22, 999, 1_000_001, 123_456_789_012] {
                let at = bids.date_time_ms(e * BIDS_PER_EPOCH);
                assert_eq!(person(e, &tables, event_rate, SEED).date_time_ms, at, "person {e} rate={event_rate}");
                for a in e * 3..e * 3 + 3 {
                    assert_eq!(auction(a, &tables, event_rate, SEED).date_time_ms, at, "auction {a} rate={event_rate}");
                }
            }
        }
    }

    #[test]
    fn extra_spread_is_nexmarks_rounding() {
        for d in 0..1_000_000u32 {
            let nexmark = (f64::from(d) * 0.2 + 0.5).floor() as u32;
            assert_eq!((d + EXTRA_SPREAD_DIVISOR / 2) / EXTRA_SPREAD_DIVISOR, nexmark, "d={d}");
        }
    }

    #[test]
    fn buffer_capacities_are_the_longest_strings() {
        assert_eq!(NAME_CAP, "Deiter Spencer".len());
        assert_eq!(EMAIL_CAP, "abcdef@abcd.com".len());
        assert_eq!(CREDIT_CARD_LEN, "0000 0000 0000 0000".len());
        assert_eq!((ITEM_NAME_CAP, DESCRIPTION_CAP), (19, 99));
    }

    /// Nexmark's size estimate of a person row, which `extra` brings to 200 on average.
    fn person_size(p: &Person<'_>) -> usize {
        PERSON_ID_BYTES
            + p.name().len()
            + p.email_address().len()
            + p.credit_card().len()
            + p.city.len()
            + p.state.len()
            + p.extra.len()
    }

    /// Nexmark's size estimate of an auction row, which `extra` brings to 500 on average.
    fn auction_size(a: &Auction<'_>) -> usize {
        AUCTION_ID_BYTES + a.item_name().len() + a.description().len() + AUCTION_NUMBERS_BYTES + a.extra.len()
    }

    #[test]
    fn rows_follow_nexmarks_proportions() {
        /// Persons checked; 3 times as many auctions.
        const N: u64 = 20_000;
        let tables = Tables::new(SEED);
        let mut person_bytes = 0;
        for p in 0..N {
            let row = person(p, &tables, EVENT_RATE, SEED);
            assert_eq!(row.id, 1000 + p as i64);
            assert!(FIRST_NAMES.iter().any(|f| row.name().starts_with(&format!("{f} "))), "p={p}: {row:?}");
            assert!(row.email_address().ends_with(".com") && row.email_address().contains('@'), "p={p}");
            assert!(US_CITIES.contains(&row.city) && US_STATES.contains(&row.state), "p={p}");
            let card = row.credit_card().as_bytes();
            assert!(card.iter().enumerate().all(|(i, &c)| if i % 5 == 4 { c == b' ' } else { c.is_ascii_digit() }));
            assert!(row.extra.iter().all(u8::is_ascii_lowercase), "p={p}");
            person_bytes += person_size(&row);
        }
        let mut hot = 0;
        let mut categories = [0u64; CATEGORIES as usize];
        let mut auction_bytes = 0;
        for a in 0..3 * N {
            let row = auction(a, &tables, EVENT_RATE, SEED);
            let e = a / 3;
            assert_eq!(row.id, 1000 + a as i64);
            assert!((1000..=1000 + e as i64 + 10).contains(&row.seller), "a={a}: seller {}", row.seller);
            hot += u64::from(row.seller == 1000 + (e / 100 * 100) as i64);
            assert!((10..=14).contains(&row.category), "a={a}");
            categories[(row.category - 10) as usize] += 1;
            assert!(row.expires_ms > row.date_time_ms, "a={a}");
            assert!(row.reserve > row.initial_bid && (100..=100_000_000).contains(&row.initial_bid), "a={a}");
            assert!(row.item_name().len() <= ITEM_NAME_CAP && row.description().len() <= DESCRIPTION_CAP);
            assert!(row.extra.iter().all(u8::is_ascii_lowercase), "a={a}");
            auction_bytes += auction_size(&row);
        }
        let hot_share = hot as f64 / (3 * N) as f64;
        assert!((0.74..0.76).contains(&hot_share), "hot sellers: {hot_share}");
        for (c, &n) in categories.iter().enumerate() {
            let share = n as f64 / (3 * N) as f64;
            assert!((0.19..0.21).contains(&share), "category {}: {share}", c + 10);
        }
        let person_avg = person_bytes as f64 / N as f64;
        let auction_avg = auction_bytes as f64 / (3 * N) as f64;
        assert!((196.0..204.0).contains(&person_avg), "person rows: {person_avg} bytes");
        assert!((490.0..510.0).contains(&auction_avg), "auction rows: {auction_avg} bytes");
    }

    #[test]
    fn expiry_stays_within_twice_the_horizon() {
        let tables = Tables::new(SEED);
        // At 1000 bids/s the horizon of 1533 bids is 1533 ms.
        for a in 0..3_000 {
            let row = auction(a, &tables, 1_000, SEED);
            assert!((1..=2 * 1533).contains(&(row.expires_ms - row.date_time_ms)), "a={a}");
        }
    }

    #[test]
    fn extreme_inputs_do_not_panic() {
        let tables = Tables::new(SEED);
        let mut persons = builder(NEXMARK_PERSON_SCHEMA);
        let mut auctions = builder(NEXMARK_AUCTION_SCHEMA);
        for n in [0, 1, u64::MAX / 46, u64::MAX / 3, i64::MAX as u64, u64::MAX - 1, u64::MAX] {
            for event_rate in [0, 1, u64::MAX] {
                for seed in [0, SEED, u64::MAX] {
                    write_person(n, &tables, event_rate, seed, &mut persons);
                    write_auction(n, &tables, event_rate, seed, &mut auctions);
                    let row = auction(n, &tables, event_rate, seed);
                    assert!(row.expires_ms >= row.date_time_ms && row.seller >= 1000, "a={n}");
                }
            }
        }
        assert_eq!(person(u64::MAX, &tables, 0, SEED).id, i64::MAX);
        assert_eq!(person(u64::MAX, &tables, 1, SEED).date_time_ms, i64::MAX);
    }

    #[test]
    fn draw_extra_of_a_full_row_is_empty_and_draws_nothing() {
        let tables = Tables::new(SEED);
        let mut rng = SplitMix64::new(1);
        assert!(draw_extra(&mut rng, &tables, 201, 200).is_empty());
        assert!(draw_extra(&mut rng, &tables, usize::MAX, 200).is_empty());
        let mut fresh = SplitMix64::new(1);
        assert_eq!(rng.next_u64(), fresh.next_u64(), "no draw was taken");
        // A row of exactly the average gets an empty extra, after drawing its offset as Nexmark does.
        assert!(draw_extra(&mut rng, &tables, 200, 200).is_empty());
        fresh.next_u64();
        assert_eq!(rng.next_u64(), fresh.next_u64(), "one draw (the offset) was taken");
    }

    #[test]
    fn person_auction_and_bid_streams_do_not_overlap() {
        /// Rows of each table checked, and draws of each row's stream (more than any row takes).
        const ROWS: u64 = 200;
        const DRAWS: usize = 300;
        let mut seen = std::collections::HashSet::new();
        for n in 0..ROWS {
            let bid = SplitMix64::new(mix64(SEED.wrapping_add(n.wrapping_mul(GOLDEN))));
            for mut rng in [bid, row_rng(SEED, n, PERSON_SALT), row_rng(SEED, n, AUCTION_SALT)] {
                for _ in 0..DRAWS {
                    assert!(seen.insert(rng.next_u64()), "row {n}: two streams share a draw");
                }
            }
        }
    }
}
