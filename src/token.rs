//! mio `Token` <-> (slot, side, generation).
//!
//! A pair token packs the slab slot, the side (client or backend) and the
//! pair's generation. The generation changes each time a slot is reused, so
//! an event that was queued for the old occupant of a slot is recognised as
//! stale and dropped. Tokens at the top of the range are reserved for the
//! worker's listeners and its waker; pair generations are kept below 2^31 so
//! the two ranges never meet.

use mio::Token;

/// Which socket of a pair an event or an operation concerns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Client = 0,
    Backend = 1,
}

/// The waker's token: the top of the range.
pub const WAKER: Token = Token(usize::MAX);
/// Listener `i` has token `LISTENER_BASE - i`.
const LISTENER_BASE: usize = usize::MAX - 1;
/// At most this many listeners per worker.
pub const MAX_LISTENERS: usize = 4096;
/// Generations wrap below this bound, leaving the top half for reserved tokens.
pub const GEN_MASK: u32 = 0x7fff_ffff;

/// What a token names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Waker,
    Listener(usize),
    Pair { slot: usize, side: Side, gen: u32 },
}

pub fn listener(index: usize) -> Token {
    debug_assert!(index < MAX_LISTENERS);
    Token(LISTENER_BASE - index)
}

pub fn pair(slot: usize, side: Side, gen: u32) -> Token {
    debug_assert!(slot < (1 << 31), "slot {slot} too large for a token");
    debug_assert!(gen <= GEN_MASK);
    Token(((gen as usize) << 32) | (slot << 1) | side as usize)
}

pub fn decode(token: Token) -> Target {
    let t = token.0;
    if t == WAKER.0 {
        Target::Waker
    } else if t > LISTENER_BASE - MAX_LISTENERS {
        Target::Listener(LISTENER_BASE - t)
    } else {
        let side = if t & 1 == 0 {
            Side::Client
        } else {
            Side::Backend
        };
        Target::Pair {
            slot: (t & 0xffff_ffff) >> 1,
            side,
            gen: (t >> 32) as u32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pair_tokens_round_trip() {
        for &(slot, gen) in &[(0, 0), (1, 1), (12345, 77), ((1 << 31) - 1, GEN_MASK)] {
            for side in [Side::Client, Side::Backend] {
                assert_eq!(
                    decode(pair(slot, side, gen)),
                    Target::Pair { slot, side, gen }
                );
            }
        }
    }

    #[test]
    fn reserved_tokens_never_collide_with_pairs() {
        assert_eq!(decode(WAKER), Target::Waker);
        assert_eq!(decode(listener(0)), Target::Listener(0));
        assert_eq!(
            decode(listener(MAX_LISTENERS - 1)),
            Target::Listener(MAX_LISTENERS - 1)
        );
        let highest_pair = pair((1 << 31) - 1, Side::Backend, GEN_MASK).0;
        assert!(highest_pair < listener(MAX_LISTENERS - 1).0);
    }
}
