//! A reservation: tokens taken now on an estimate, settled once the real cost is known.
//!
//! An exchange tells what an order cost only in its reply (a request weight, a fill count).
//! A reservation takes the estimate before the call; `settle(actual)` charges the
//! difference (forced: the exchange has counted it) or refunds it, `cancel()` refunds the
//! whole estimate. Either happens once.

use std::sync::atomic::{AtomicU8, Ordering};

/// Where a reservation stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    Open = 0,
    Settled = 1,
    Cancelled = 2,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Stage::Open => "open",
            Stage::Settled => "settled",
            Stage::Cancelled => "cancelled",
        }
    }

    fn from_u8(value: u8) -> Stage {
        match value {
            0 => Stage::Open,
            1 => Stage::Settled,
            _ => Stage::Cancelled,
        }
    }
}

/// What a settlement does to the bucket, in tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Adjustment {
    None,
    /// Forced: the bucket may go into debt beyond its burst.
    Charge(u64),
    /// Never beyond full.
    Refund(u64),
}

/// The stage of one reservation, closed once by whichever thread settles or cancels first.
#[derive(Debug, Default)]
pub struct Lifecycle {
    stage: AtomicU8,
}

impl Lifecycle {
    pub fn stage(&self) -> Stage {
        Stage::from_u8(self.stage.load(Ordering::Acquire))
    }

    /// Settles a reservation of `estimate` tokens whose call cost `actual`: what to do to
    /// the bucket, or the stage it was already closed in.
    pub fn settle(&self, estimate: u64, actual: u64) -> Result<Adjustment, Stage> {
        self.close(Stage::Settled)?;
        Ok(match actual.cmp(&estimate) {
            std::cmp::Ordering::Greater => Adjustment::Charge(actual - estimate),
            std::cmp::Ordering::Less => Adjustment::Refund(estimate - actual),
            std::cmp::Ordering::Equal => Adjustment::None,
        })
    }

    /// Cancels a reservation of `estimate` tokens: the call did not happen.
    pub fn cancel(&self, estimate: u64) -> Result<Adjustment, Stage> {
        self.close(Stage::Cancelled)?;
        Ok(match estimate {
            0 => Adjustment::None,
            n => Adjustment::Refund(n),
        })
    }

    fn close(&self, to: Stage) -> Result<(), Stage> {
        self.stage
            .compare_exchange(
                Stage::Open as u8,
                to as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .map(|_| ())
            .map_err(Stage::from_u8)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn settling_for_more_charges_the_difference_and_for_less_refunds_it() {
        assert_eq!(Lifecycle::default().settle(5, 8), Ok(Adjustment::Charge(3)));
        assert_eq!(Lifecycle::default().settle(5, 2), Ok(Adjustment::Refund(3)));
        assert_eq!(Lifecycle::default().settle(5, 5), Ok(Adjustment::None));
    }

    #[test]
    fn cancelling_refunds_the_whole_estimate() {
        assert_eq!(Lifecycle::default().cancel(4), Ok(Adjustment::Refund(4)));
    }

    #[test]
    fn a_reservation_is_closed_once() {
        let reservation = Lifecycle::default();
        assert_eq!(reservation.settle(3, 3), Ok(Adjustment::None));
        assert_eq!(reservation.cancel(3), Err(Stage::Settled));
        assert_eq!(reservation.settle(3, 1), Err(Stage::Settled));
        assert_eq!(reservation.stage(), Stage::Settled);
    }
}
