//! The spool's bounds: a profile waiting for its destination must never fill the node's disk,
//! and when the spool is full the documented choice applies — keep the newest profiles (drop
//! the oldest, as Fluent Bit's storage limit does; the default: a long outage then keeps the
//! latest incidents) or keep the oldest (refuse the new one: the first profiles of an outage
//! are kept). Whatever is dropped is logged by the caller with its key; nothing goes silently.

/// Which profiles stay when the spool is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Keep {
    Newest,
    Oldest,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub max_bytes: u64,
    pub max_objects: usize,
    pub keep: Keep,
}

/// What to do with an incoming profile of `incoming` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Room {
    /// Spool it, after dropping these waiting entries (indices into `waiting`, oldest first).
    Admit { drop: Vec<usize> },
    /// Do not spool it: it alone exceeds the bytes limit, or the oldest are kept.
    Refuse,
}

/// Decides for an incoming profile, given the sizes of the waiting ones, oldest first.
pub fn room(limits: &Limits, waiting: &[u64], incoming: u64) -> Room {
    if incoming > limits.max_bytes || limits.max_objects == 0 {
        return Room::Refuse;
    }
    let mut bytes: u64 = waiting.iter().sum::<u64>() + incoming;
    let mut objects = waiting.len() + 1;
    let mut drop = Vec::new();
    for (i, &size) in waiting.iter().enumerate() {
        if bytes <= limits.max_bytes && objects <= limits.max_objects {
            break;
        }
        if limits.keep == Keep::Oldest {
            return Room::Refuse;
        }
        drop.push(i);
        bytes -= size;
        objects -= 1;
    }
    Room::Admit { drop }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_bytes: u64, max_objects: usize, keep: Keep) -> Limits {
        Limits {
            max_bytes,
            max_objects,
            keep,
        }
    }

    #[test]
    fn room_left_drops_nothing() {
        let l = limits(100, 3, Keep::Newest);
        assert_eq!(room(&l, &[10, 20], 30), Room::Admit { drop: vec![] });
    }

    #[test]
    fn keeping_the_newest_drops_the_oldest_until_both_limits_hold() {
        let l = limits(100, 3, Keep::Newest);
        // Objects: three waiting plus one is one too many.
        assert_eq!(room(&l, &[1, 2, 3], 4), Room::Admit { drop: vec![0] });
        // Bytes: 60 + 30 + 50 = 140 > 100, dropping the 60 leaves 80.
        assert_eq!(room(&l, &[60, 30], 50), Room::Admit { drop: vec![0] });
        assert_eq!(
            room(&l, &[40, 40, 10], 90),
            Room::Admit { drop: vec![0, 1] }
        );
        let all = vec![0, 1, 2];
        assert_eq!(room(&l, &[40, 40, 30], 90), Room::Admit { drop: all });
    }

    #[test]
    fn keeping_the_oldest_refuses_the_new_profile() {
        let l = limits(100, 2, Keep::Oldest);
        assert_eq!(room(&l, &[1, 2], 3), Room::Refuse);
        assert_eq!(room(&l, &[90], 20), Room::Refuse);
        assert_eq!(room(&l, &[10], 20), Room::Admit { drop: vec![] });
    }

    #[test]
    fn a_profile_larger_than_the_whole_spool_is_refused() {
        let l = limits(100, 10, Keep::Newest);
        assert_eq!(room(&l, &[], 101), Room::Refuse);
    }
}
