//! A plan: a population and the phases it goes through (ramp-up, steady state, ramp-down),
//! read from a TOML scenario file or built by the `idle` and `chat` subcommands.
//!
//! ```toml
//! users = 1000            # population, split across workers
//! presence = true         # send initial presence after login (default true)
//!
//! [chat]
//! rate = 2000             # total messages/s while a phase chats; 0 = closed loop
//! window = 1              # closed loop: messages in flight per pair
//!
//! [[phase]]
//! name = "ramp-up"
//! users = 1000            # online at the end of the phase (default: unchanged)
//! join_rate = 100         # users/s logging in or out toward that (default: all at once)
//!
//! [[phase]]
//! name = "steady"
//! duration = "60s"        # "500ms", "30s", "5m", "1h" or a number of seconds
//! activity = "chat"       # "idle" (default) or "chat"
//! ```
//!
//! A phase without a duration lasts until its ramp is done.

use std::time::Duration;

use serde::Deserialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activity {
    Idle,
    Chat,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub users: u64,
    pub presence: bool,
    pub chat: ChatSettings,
    pub phases: Vec<PhaseSpec>,
}

#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatSettings {
    /// Total messages/s over the population; 0 runs a closed loop at the server's pace.
    #[serde(default)]
    pub rate: f64,
    /// Closed loop: messages kept in flight per pair.
    #[serde(default = "one")]
    pub window: u32,
}

impl Default for ChatSettings {
    fn default() -> Self {
        Self {
            rate: 0.0,
            window: 1,
        }
    }
}

fn one() -> u32 {
    1
}

#[derive(Clone, Debug, PartialEq)]
pub struct PhaseSpec {
    pub name: String,
    /// `None`: until the ramp to `users` is done.
    pub duration: Option<Duration>,
    /// Users online at the end of the phase, over the whole population.
    pub users: u64,
    /// Users/s logging in or out; `None`: as fast as possible.
    pub join_rate: Option<f64>,
    pub activity: Activity,
    /// Overrides `chat.rate` in this phase.
    pub message_rate: Option<f64>,
    /// Ends early once every message sent has been delivered (`duration` is the limit).
    pub until_drained: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanFile {
    users: u64,
    #[serde(default = "yes")]
    presence: bool,
    #[serde(default)]
    chat: ChatSettings,
    #[serde(default)]
    phase: Vec<PhaseFile>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PhaseFile {
    name: String,
    duration: Option<DurationValue>,
    users: Option<u64>,
    join_rate: Option<f64>,
    #[serde(default = "idle")]
    activity: Activity,
    message_rate: Option<f64>,
    #[serde(default)]
    until_drained: bool,
}

fn idle() -> Activity {
    Activity::Idle
}

#[derive(Deserialize)]
#[serde(untagged)]
enum DurationValue {
    Seconds(f64),
    Text(String),
}

/// A scenario file that cannot be used, with the place and the reason.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum PlanError {
    #[error("{0}")]
    Toml(String),
    #[error("users must be at least 1")]
    NoUsers,
    #[error("the scenario has no [[phase]]")]
    NoPhases,
    #[error("phase {0:?} appears twice")]
    DuplicateName(String),
    #[error("phase {phase:?}: {reason}")]
    Phase { phase: String, reason: String },
    #[error("chat.window must be at least 1")]
    Window,
    #[error("chat.rate must be a finite number >= 0")]
    Rate,
}

impl Plan {
    pub fn from_toml(text: &str) -> Result<Plan, PlanError> {
        let file: PlanFile = toml::from_str(text).map_err(|e| PlanError::Toml(e.to_string()))?;
        if file.users == 0 {
            return Err(PlanError::NoUsers);
        }
        if file.chat.window == 0 {
            return Err(PlanError::Window);
        }
        if !(file.chat.rate.is_finite() && file.chat.rate >= 0.0) {
            return Err(PlanError::Rate);
        }
        if file.phase.is_empty() {
            return Err(PlanError::NoPhases);
        }
        let mut phases: Vec<PhaseSpec> = Vec::new();
        let mut online = 0;
        for p in file.phase {
            if phases.iter().any(|q| q.name == p.name) {
                return Err(PlanError::DuplicateName(p.name));
            }
            let fail = |reason: String| PlanError::Phase {
                phase: p.name.clone(),
                reason,
            };
            let duration = p
                .duration
                .map(|d| match d {
                    DurationValue::Seconds(s) if s.is_finite() && s > 0.0 => {
                        Ok(Duration::from_secs_f64(s))
                    }
                    DurationValue::Seconds(s) => Err(format!("duration {s} is not positive")),
                    DurationValue::Text(t) => parse_duration(&t),
                })
                .transpose()
                .map_err(fail)?;
            let users = p.users.unwrap_or(online);
            if users > file.users {
                return Err(fail(format!(
                    "users = {users} exceeds the population ({})",
                    file.users
                )));
            }
            if duration.is_none() && users == online {
                return Err(fail(
                    "needs a duration, or a users count that differs from the previous phase"
                        .into(),
                ));
            }
            for (key, value) in [("join_rate", p.join_rate), ("message_rate", p.message_rate)] {
                if value.is_some_and(|v| !(v.is_finite() && v > 0.0)) {
                    return Err(fail(format!("{key} must be a positive number")));
                }
            }
            if p.until_drained && duration.is_none() {
                return Err(fail("until_drained needs a duration as its limit".into()));
            }
            online = users;
            phases.push(PhaseSpec {
                name: p.name,
                duration,
                users,
                join_rate: p.join_rate,
                activity: p.activity,
                message_rate: p.message_rate,
                until_drained: p.until_drained,
            });
        }
        Ok(Plan {
            users: file.users,
            presence: file.presence,
            chat: file.chat,
            phases,
        })
    }
}

/// `"250ms"`, `"30s"`, `"5m"`, `"1h"`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("bad duration {text:?}: expected e.g. \"30s\""))?;
    let seconds = match unit.trim() {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "bad duration unit {other:?} in {text:?} (ms, s, m, h)"
            ));
        }
    };
    if seconds > 0.0 && seconds.is_finite() {
        Ok(Duration::from_secs_f64(seconds))
    } else {
        Err(format!("duration {text:?} is not positive"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        users = 100
        [chat]
        rate = 500
        [[phase]]
        name = "ramp-up"
        users = 100
        join_rate = 50
        [[phase]]
        name = "steady"
        duration = "1m"
        activity = "chat"
        [[phase]]
        name = "drain"
        duration = 5
        until_drained = true
        [[phase]]
        name = "ramp-down"
        users = 0
    "#;

    #[test]
    fn parses_a_full_plan() {
        let plan = Plan::from_toml(GOOD).unwrap();
        assert_eq!(plan.users, 100);
        assert!(plan.presence);
        assert_eq!(
            plan.chat,
            ChatSettings {
                rate: 500.0,
                window: 1
            }
        );
        let names: Vec<_> = plan.phases.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["ramp-up", "steady", "drain", "ramp-down"]);
        let steady = &plan.phases[1];
        assert_eq!(steady.duration, Some(Duration::from_secs(60)));
        assert_eq!(
            steady.users, 100,
            "users carry over from the previous phase"
        );
        assert_eq!(steady.activity, Activity::Chat);
        assert_eq!(plan.phases[0].join_rate, Some(50.0));
        assert_eq!(plan.phases[0].duration, None);
        assert!(plan.phases[2].until_drained);
        assert_eq!(plan.phases[3].users, 0);
    }

    fn error_of(text: &str) -> String {
        Plan::from_toml(text).unwrap_err().to_string()
    }

    #[test]
    fn rejects_bad_files_with_a_clear_reason() {
        assert!(
            error_of("users = 10\n[[phase]]\nname='a'\nduration='1s'\nbogus=1")
                .contains("unknown field `bogus`")
        );
        assert_eq!(error_of("users = 10"), "the scenario has no [[phase]]");
        assert_eq!(
            error_of("users = 0\n[[phase]]\nname='a'\nduration=1"),
            "users must be at least 1"
        );
        assert_eq!(
            error_of("users = 10\n[[phase]]\nname='a'\nusers=20"),
            "phase \"a\": users = 20 exceeds the population (10)"
        );
        assert_eq!(
            error_of("users = 10\n[[phase]]\nname='a'"),
            "phase \"a\": needs a duration, or a users count that differs from the previous phase"
        );
        assert!(
            error_of("users = 10\n[[phase]]\nname='a'\nduration='3 weeks'")
                .contains("bad duration unit")
        );
        assert_eq!(
            error_of(
                "users = 10\n[[phase]]\nname='a'\nduration=1\n[[phase]]\nname='a'\nduration=1"
            ),
            "phase \"a\" appears twice"
        );
        assert!(
            error_of("users = 10\n[[phase]]\nname='a'\nduration=1\nactivity='dance'")
                .contains("unknown variant `dance`")
        );
        assert_eq!(
            error_of("users = 10\n[[phase]]\nname='a'\nusers=5\njoin_rate=-1"),
            "phase \"a\": join_rate must be a positive number"
        );
        assert_eq!(
            error_of("users = 10\n[chat]\nwindow=0\n[[phase]]\nname='a'\nduration=1"),
            "chat.window must be at least 1"
        );
        assert!(error_of("users = 'many'").contains("invalid type"));
    }

    #[test]
    fn the_bundled_example_parses() {
        let plan = Plan::from_toml(include_str!("../../scenarios/ramp-chat.toml")).unwrap();
        assert_eq!(plan.phases.len(), 4);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("s").is_err());
    }
}
