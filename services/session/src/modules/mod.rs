//! Every account module the server has, one file or folder each. Adding a
//! feature: its module here (`pub mod`), and its line in [`REGISTERED`].

pub mod blocking;
pub mod carbons;
pub mod disco;
pub mod last;
pub mod offline;
pub mod ping;
pub mod register;
pub mod roster;
pub mod time;
pub mod version;

use std::collections::BTreeMap;

use crate::module::{AccountModule, Constructor, Modules};

/// The modules by the name of their configuration section, in the order
/// their hooks run: blocking first, so that what a blocked contact sends
/// is refused before it is stored offline.
pub const REGISTERED: &[(&str, Constructor)] = &[
    ("blocking", blocking::module),
    ("carbons", carbons::module),
    ("disco", disco::module),
    ("last", last::module),
    ("offline", offline::module),
    ("ping", ping::module),
    ("register", register::module),
    ("roster", roster::module),
    ("time", time::module),
    ("version", version::module),
];

/// The modules `[modules]` enables (all of them unless one says
/// `enabled = false`), each with its section, then `built` (see
/// [`Modules::build`]).
pub fn all(
    configured: &BTreeMap<String, toml::Table>,
    built: Vec<(&'static str, Box<dyn AccountModule>)>,
) -> anyhow::Result<Modules> {
    Modules::build(REGISTERED, configured, built)
}

#[cfg(test)]
mod tests {
    use crate::module::AccountModule;

    /// Old replicas run on the new schema during a rolling upgrade and after a
    /// rollback: no module's migration may take away what they read.
    #[test]
    fn every_module_migration_only_adds() {
        let modules = super::all(&Default::default(), Vec::new()).unwrap();
        for schema in modules.iter().filter_map(AccountModule::schema) {
            assert_eq!(schema.first_contraction(), None, "{}", schema.name);
        }
    }
}
