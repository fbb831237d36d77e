//! The simulated users: their names and passwords, and which of them this worker drives when
//! several load generators share one population.

use std::ops::Range;

/// `workers` processes split `users` accounts; this one is `index`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Population {
    pub users: u64,
    pub workers: u32,
    pub index: u32,
}

impl Population {
    /// This worker's users. The population is cut in whole groups (a chat pair, a MUC room, a
    /// roster ring segment) so that users who talk to each other are driven by one worker;
    /// users past the last whole group are left out.
    pub fn slice(&self, group: u64) -> Range<u64> {
        let group = group.max(1);
        let groups = self.users / group;
        let workers = u64::from(self.workers.max(1));
        let index = u64::from(self.index);
        let start = groups * index / workers;
        let end = groups * (index + 1) / workers;
        start * group..end * group
    }
}

/// How account `i` is named: `{prefix}{i}@{domain}` with password `pattern` where `{i}` is
/// replaced by the index.
#[derive(Clone, Debug)]
pub struct Accounts {
    pub prefix: String,
    pub password_pattern: String,
    pub domain: String,
}

impl Accounts {
    pub fn username(&self, i: u64) -> String {
        format!("{}{i}", self.prefix)
    }

    pub fn password(&self, i: u64) -> String {
        self.password_pattern.replace("{i}", &i.to_string())
    }

    pub fn bare_jid(&self, i: u64) -> String {
        format!("{}{i}@{}", self.prefix, self.domain)
    }

    /// The index of a JID of ours (`user12@localhost/res` gives 12).
    pub fn index_of(&self, jid: &str) -> Option<u64> {
        let bare = jid.split('/').next()?;
        let (local, domain) = bare.split_once('@')?;
        if domain != self.domain {
            return None;
        }
        local.strip_prefix(&self.prefix)?.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_split_whole_groups_without_overlap() {
        let slices: Vec<_> = (0..3)
            .map(|index| {
                Population {
                    users: 101,
                    workers: 3,
                    index,
                }
                .slice(2)
            })
            .collect();
        assert_eq!(slices, vec![0..32, 32..66, 66..100]);
        let one = Population {
            users: 10,
            workers: 1,
            index: 0,
        };
        assert_eq!(one.slice(1), 0..10);
        assert_eq!(one.slice(4), 0..8);
    }

    #[test]
    fn names_and_indexes() {
        let accounts = Accounts {
            prefix: "user".into(),
            password_pattern: "pw-{i}".into(),
            domain: "localhost".into(),
        };
        assert_eq!(accounts.bare_jid(7), "user7@localhost");
        assert_eq!(accounts.password(7), "pw-7");
        assert_eq!(accounts.index_of("user7@localhost/loadtest"), Some(7));
        assert_eq!(accounts.index_of("user7@elsewhere"), None);
        assert_eq!(accounts.index_of("bob@localhost"), None);
    }
}
