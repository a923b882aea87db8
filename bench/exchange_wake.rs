//! Question: how fast does a shard wake when work arrives, and what does an idle shard cost?
//!
//! Two pinned glommio executors ping-pong one message through the exchange (lane + doorbell), as shards do.
//! Round trips are measured with the receiver busy-waiting (back-to-back pings: it never parks), and with a
//! pause before each ping longer than the spin-before-park time, so that every ping must wake a parked
//! executor. Baseline in the same run: the same ping-pong over std::sync::mpsc with blocking receives
//! (a futex wake-up per message).
//!
//!   cargo bench --bench exchange_wake

use std::time::{Duration, Instant};

use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;
use shardflow::constants::SHARD_SPIN_BEFORE_PARK_US;
use shardflow::queue::{Exchange, Message, ShardId};

const PINGS: usize = 2_000;

fn report(name: &str, h: &Histogram<u64>) {
    println!(
        "{name:<44} round trip p50 {:>6.1} us  p99 {:>6.1} us  p99.9 {:>7.1} us  max {:>7.1} us",
        h.value_at_quantile(0.5) as f64 / 1e3,
        h.value_at_quantile(0.99) as f64 / 1e3,
        h.value_at_quantile(0.999) as f64 / 1e3,
        h.max() as f64 / 1e3
    );
}

fn ping(m: u64) -> Message {
    Message::Watermark(m as i64)
}

/// How a waiting side waits.
#[derive(Clone, Copy)]
enum Wait {
    /// Park the task on the doorbell at once.
    Doorbell,
    /// Watch the doorbell for the spin time, then park on it (what shards do).
    SpinThenDoorbell,
    /// Poll the lane in a loop, yielding to the executor: the floor of crossing a lane, at 100% CPU.
    BusyPoll,
}

async fn wait(how: Wait, bell: &std::sync::Arc<shardflow::queue::Doorbell>) {
    match how {
        Wait::Doorbell => bell.wait().await,
        Wait::SpinThenDoorbell => bell.wait_spinning(Duration::from_micros(SHARD_SPIN_BEFORE_PARK_US)).await,
        Wait::BusyPoll => futures_lite::future::yield_now().await,
    }
}

/// Ping-pong through the exchange; `pause` before each ping.
fn exchange_round_trips(pause: Duration, how: Wait) -> Histogram<u64> {
    let ex = Exchange::new(2, 1);
    let (a, b) = (ShardId(0), ShardId(1));
    let ex_b = ex.clone();
    let echo = LocalExecutorBuilder::new(Placement::Fixed(1))
        .spin_before_park(Duration::from_micros(SHARD_SPIN_BEFORE_PARK_US))
        .spawn(move || async move {
            let bell = ex_b.doorbell(b);
            let mut seen = 0;
            while seen < PINGS {
                match ex_b.try_recv(0, a, b) {
                    Some(mut m) => {
                        seen += 1;
                        while let Err(back) = ex_b.try_send(0, b, a, m) {
                            m = back;
                        }
                    }
                    None => wait(how, &bell).await,
                }
            }
        })
        .expect("start the echo executor");
    let ex_a = ex.clone();
    let pinger = LocalExecutorBuilder::new(Placement::Fixed(0))
        .spin_before_park(Duration::from_micros(SHARD_SPIN_BEFORE_PARK_US))
        .spawn(move || async move {
            let bell = ex_a.doorbell(a);
            let mut h = Histogram::<u64>::new(3).expect("histogram");
            for i in 0..PINGS as u64 {
                if !pause.is_zero() {
                    glommio::timer::sleep(pause).await;
                }
                let t0 = Instant::now();
                let mut m = ping(i);
                while let Err(back) = ex_a.try_send(0, a, b, m) {
                    m = back;
                }
                loop {
                    if ex_a.try_recv(0, b, a).is_some() {
                        break;
                    }
                    wait(how, &bell).await;
                }
                h.record(t0.elapsed().as_nanos() as u64).expect("in range");
            }
            h
        })
        .expect("start the ping executor");
    let h = pinger.join().expect("ping executor");
    echo.join().expect("echo executor");
    h
}

/// The baseline: ping-pong over std mpsc channels with blocking receives.
fn mpsc_round_trips(pause: Duration) -> Histogram<u64> {
    let (to_b, from_a) = std::sync::mpsc::channel::<u64>();
    let (to_a, from_b) = std::sync::mpsc::channel::<u64>();
    let echo = std::thread::spawn(move || {
        for m in from_a.iter().take(PINGS) {
            to_a.send(m).expect("reply");
        }
    });
    let mut h = Histogram::<u64>::new(3).expect("histogram");
    for i in 0..PINGS as u64 {
        if !pause.is_zero() {
            std::thread::sleep(pause);
        }
        let t0 = Instant::now();
        to_b.send(i).expect("ping");
        from_b.recv().expect("pong");
        h.record(t0.elapsed().as_nanos() as u64).expect("in range");
    }
    echo.join().expect("echo thread");
    h
}

fn main() {
    let parked = Duration::from_micros(SHARD_SPIN_BEFORE_PARK_US * 20);
    println!("{PINGS} pings each; spin before park {SHARD_SPIN_BEFORE_PARK_US} us; parked case pauses {parked:?}");
    report("exchange, busy polling (floor, no pause)", &exchange_round_trips(Duration::ZERO, Wait::BusyPoll));
    report("exchange, doorbell (no pause)", &exchange_round_trips(Duration::ZERO, Wait::Doorbell));
    report("exchange, spin then doorbell (no pause)", &exchange_round_trips(Duration::ZERO, Wait::SpinThenDoorbell));
    report(
        &format!("exchange, spin then doorbell ({parked:?} pause)"),
        &exchange_round_trips(parked, Wait::SpinThenDoorbell),
    );
    report(&format!("exchange, doorbell, parked ({parked:?} pause)"), &exchange_round_trips(parked, Wait::Doorbell));
    report("baseline std mpsc, blocking (no pause)", &mpsc_round_trips(Duration::ZERO));
    report(&format!("baseline std mpsc, blocking ({parked:?} pause)"), &mpsc_round_trips(parked));
}
