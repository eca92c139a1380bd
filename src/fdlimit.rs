//! The open-file limit: every player costs the hub two descriptors (the
//! player's socket and its channel), so the limit decides how many players
//! a hub can hold while its control and channel doors keep working.

use rustix::process::{Resource, getrlimit, setrlimit};

/// Raises the soft open-file limit to the hard one (a 1,024 default would
/// cap a hub at a few hundred players) and returns the limit in force.
pub fn raise() -> u64 {
    let mut lim = getrlimit(Resource::Nofile);
    if let Some(hard) = lim.maximum
        && lim.current.is_some_and(|soft| soft < hard)
    {
        lim.current = Some(hard.min(1 << 20));
        let _ = setrlimit(Resource::Nofile, lim);
    }
    getrlimit(Resource::Nofile).current.unwrap_or(1 << 20)
}

/// Players the hub can hold at once with `files` descriptors, keeping
/// `reserve` for the doors (pending logins and channels, pools, logs).
pub fn player_cap(files: u64, reserve: u64) -> usize {
    let reserve = reserve.min(files / 4);
    (files.saturating_sub(reserve) / 2).max(1) as usize
}

#[cfg(test)]
mod tests {
    #[test]
    fn leaves_a_reserve() {
        assert_eq!(super::player_cap(1 << 20, 1500), ((1 << 20) - 1500) / 2);
        assert_eq!(super::player_cap(48, 1500), 18);
    }
}
