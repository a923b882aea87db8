#!/usr/bin/env python3
"""Reference (slow, pure-Python) implementation of shardflow's Nexmark `person` and `auction` generators.

It is the executable spec of src/source/nexmark/people.rs, which must reproduce it exactly (the Rust unit
tests compare it with persons-seed42.tsv and auctions-seed42.tsv, made by this script):

    python3 gen_people_reference.py person 1000 > persons-seed42.tsv    # persons 0..999, seed 42
    python3 gen_people_reference.py auction 1000 > auctions-seed42.tsv  # auctions 0..999, seed 42

Rows are TSV in the column order of the Flink Nexmark DDL, dateTime and expires in epoch milliseconds:
    person:  id, name, emailAddress, creditCard, city, state, dateTime, extra
    auction: id, itemName, description, initialBid, reserve, dateTime, expires, seller, category, extra

This is our own deterministic variant of Nexmark's PersonGenerator and AuctionGenerator (the Flink suite's
Java generator draws from an unseeded SplittableRandom, so it cannot be matched value for value), built like
the bid stream of gen_reference.py, whose mix64 / Rng / pool code is copied here so that a clone of the
repository is self-contained:
- Nexmark's event mix is 1 person, 3 auctions and 46 bids per 50-event epoch. Bid b is in epoch b // 46;
  person p (id 1000 + p) is in epoch p, auction a (id 1000 + a) in epoch a // 3. Both take the dateTime of
  the first bid of their epoch, bid 46 * e.
- Every row is a pure function of its number and the seed: person p draws from a SplitMix64 stream seeded
  with mix64(seed + p * GOLDEN) ^ PERSON_SALT, auction a from mix64(seed + a * GOLDEN) ^ AUCTION_SALT.
- The fields are drawn in the order of Nexmark's generators, with its constants.
- `extra` is a slice of the bid stream's 1 MiB pool of lowercase letters (the first 2^20 draws of the table
  stream of gen_reference.py). Flink's nextExactString builds it with Java's signed remainder, which puts
  letters 'H'..'a' into some extras; ours are lowercase only.
- An auction's expiry horizon is the event time of 1533 bids later: Nexmark's 1666 events (100 auctions in
  flight * 50 / 3) times 46 / 50 bids per event, rounded.
"""

M64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15
SEED = 42
BASE_TIME_MS = 1_767_225_600_000  # 2026-01-01T00:00:00Z
POOL_LEN = 1 << 20

# Salts of the person and auction streams (so that person / auction n do not reuse bid n's stream): the first
# 64 bits of the fractional parts of sqrt(2) and sqrt(3) (SHA-512's first two initial hash words).
PERSON_SALT = 0x6A09E667F3BCC908
AUCTION_SALT = 0xBB67AE8584CAA73B

BIDS_PER_EPOCH = 46
AUCTIONS_PER_EPOCH = 3
AUCTION_HORIZON_BIDS = 1533

US_STATES = "AZ,CA,ID,OR,WA,WY".split(",")
US_CITIES = "Phoenix,Los Angeles,San Francisco,Boise,Portland,Bend,Redmond,Seattle,Kent,Cheyenne".split(",")
FIRST_NAMES = "Peter,Paul,Luke,John,Saul,Vicky,Kate,Julie,Sarah,Deiter,Walter".split(",")
LAST_NAMES = "Shultz,Abrams,Spencer,White,Bartels,Walton,Smith,Jones,Noris".split(",")


def mix64(z):
    z &= M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & M64
    return z ^ (z >> 31)


class Rng:
    """SplitMix64 stream; next_int(bound) = ((next >> 32) * bound) >> 32 (Lemire, top 32 bits)."""

    def __init__(self, state):
        self.s = state & M64

    def next(self):
        self.s = (self.s + GOLDEN) & M64
        return mix64(self.s)

    def next_int(self, bound):
        return ((self.next() >> 32) * bound) >> 32

    def next_int_wide(self, bound):
        """The same formula for a bound of any width (Rust takes the product in 128 bits)."""
        return ((self.next() >> 32) * bound) >> 32

    def next_double(self):
        return (self.next() >> 11) * (1.0 / (1 << 53))


def make_pool(seed=SEED):
    """The 1 MiB extra pool: the first POOL_LEN draws of gen_reference.py's table stream."""
    rng = Rng(seed ^ 0x5DEECE66D)
    return "".join(chr(ord("a") + rng.next_int(26)) for _ in range(POOL_LEN))


def java_round(x):
    """Math.round for non-negative doubles: floor(x + 0.5)."""
    import math
    return int(math.floor(x + 0.5))


def price(rng):
    """Nexmark's nextPrice, exactly as gen_reference.py draws a bid's price."""
    return java_round(10.0 ** (rng.next_double() * 6.0) * 100.0)


def date_time(b, event_rate):
    """The dateTime of bid b (epoch ms)."""
    return BASE_TIME_MS + (b * 1000) // max(event_rate, 1)


def next_string(rng, max_len):
    """Nexmark's nextString: 3 .. max_len-1 characters, each a space (1 in 13) or a letter, then trimmed."""
    n = 3 + rng.next_int(max_len - 3)
    chars = []
    for _ in range(n):
        if rng.next_int(13) == 0:
            chars.append(" ")
        else:
            chars.append(chr(ord("a") + rng.next_int(26)))
    return "".join(chars).strip(" ")


def next_extra(rng, pool, current_size, avg):
    """Nexmark's nextExtra: a length uniform in [d - delta, d + delta), d = avg - current_size, delta = 20% of d;
    the string is a slice of the pool."""
    if current_size > avg:
        return ""
    d = avg - current_size
    delta = java_round(d * 0.2)
    size = d - delta + (0 if delta == 0 else rng.next_int(2 * delta))
    off = rng.next_int(POOL_LEN - size)
    return pool[off:off + size]


def person(p, pool, event_rate=1_000_000, seed=SEED):
    rng = Rng(mix64((seed + p * GOLDEN) & M64) ^ PERSON_SALT)
    name = FIRST_NAMES[rng.next_int(len(FIRST_NAMES))] + " " + LAST_NAMES[rng.next_int(len(LAST_NAMES))]
    email = next_string(rng, 7) + "@" + next_string(rng, 5) + ".com"
    credit_card = " ".join("%04d" % rng.next_int(10000) for _ in range(4))
    city = US_CITIES[rng.next_int(len(US_CITIES))]
    state = US_STATES[rng.next_int(len(US_STATES))]
    size = 8 + len(name) + len(email) + len(credit_card) + len(city) + len(state)
    extra = next_extra(rng, pool, size, 200)
    ts = date_time(p * BIDS_PER_EPOCH, event_rate)
    return (1000 + p, name, email, credit_card, city, state, ts, extra)


def auction(a, pool, event_rate=1_000_000, seed=SEED):
    rng = Rng(mix64((seed + a * GOLDEN) & M64) ^ AUCTION_SALT)
    e = a // AUCTIONS_PER_EPOCH
    ts = date_time(e * BIDS_PER_EPOCH, event_rate)
    if rng.next_int(4) > 0:
        seller = (e // 100) * 100
    else:
        num_people = e + 1
        active = min(num_people, 1000)
        seller = num_people - active + rng.next_int(active + 10)
    seller += 1000
    category = 10 + rng.next_int(5)
    initial_bid = price(rng)
    horizon_ms = date_time(e * BIDS_PER_EPOCH + AUCTION_HORIZON_BIDS, event_rate) - ts
    expires = ts + 1 + rng.next_int_wide(max(2 * horizon_ms, 1))
    item_name = next_string(rng, 20)
    description = next_string(rng, 100)
    reserve = initial_bid + price(rng)
    extra = next_extra(rng, pool, 8 + len(item_name) + len(description) + 40, 500)
    return (1000 + a, item_name, description, initial_bid, reserve, ts, expires, seller, category, extra)


def main():
    import argparse
    ap = argparse.ArgumentParser()
    ap.add_argument("table", choices=["person", "auction"])
    ap.add_argument("count", type=int, nargs="?", default=1000)
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--event-rate", type=int, default=1_000_000)
    a = ap.parse_args()
    pool = make_pool(a.seed)
    row = person if a.table == "person" else auction
    for n in range(a.count):
        print("\t".join(str(x) for x in row(n, pool, a.event_rate, a.seed)))


if __name__ == "__main__":
    main()
