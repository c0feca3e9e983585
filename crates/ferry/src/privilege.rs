//! Who workers run as (`--user`, `--group`, `--chdir`, `--umask`): names resolved
//! once at start, so a user that does not exist is a start-up error naming it, not
//! a failure of every worker. Applied by `spawn.rs` to each worker between fork and
//! exec (std's `uid`/`gid` also drop supplementary groups); the master keeps its
//! own identity.

use nix::unistd::{Gid, Group, Uid, User};
use std::path::PathBuf;

use crate::config::Config;

/// How each worker process is started.
#[derive(Debug, Clone, Default)]
pub struct Launch {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// `HOME`, `USER` and `LOGNAME` for the worker's user.
    pub env: Vec<(&'static str, String)>,
    pub chdir: Option<PathBuf>,
    pub umask: Option<u32>,
}

impl Launch {
    /// Resolves the options; errors say which name does not exist.
    pub fn from_config(config: &Config) -> Result<Launch, String> {
        let mut launch = Launch {
            chdir: config.chdir.clone(),
            umask: config.umask,
            ..Launch::default()
        };
        if let Some(dir) = &config.chdir {
            if !dir.is_dir() {
                return Err(format!("--chdir {}: no such folder", dir.display()));
            }
        }
        if let Some(name) = &config.user {
            let user = user(name)?;
            if user.uid.is_root() && !config.allow_root_workers {
                return Err(format!(
                    "--user {name} runs workers as root; add --allow-root-workers if that is meant"
                ));
            }
            launch.uid = Some(user.uid.as_raw());
            launch.gid = Some(user.gid.as_raw());
            launch.env = vec![
                ("HOME", user.dir.to_string_lossy().into_owned()),
                ("USER", user.name.clone()),
                ("LOGNAME", user.name),
            ];
        }
        if let Some(name) = &config.group {
            launch.gid = Some(group(name)?.as_raw());
        }
        let changes_identity = launch.uid.is_some() || launch.gid.is_some();
        let me = Uid::effective();
        if changes_identity && !me.is_root() && launch.uid != Some(me.as_raw()) {
            return Err(format!(
                "--user/--group need the master to run as root (it runs as uid {me})"
            ));
        }
        Ok(launch)
    }

    /// The owner a `unix:` listener's file gets: the workers' user and group.
    pub fn socket_owner(&self) -> Option<(Option<u32>, Option<u32>)> {
        (self.uid.is_some() || self.gid.is_some()).then_some((self.uid, self.gid))
    }
}

fn user(name: &str) -> Result<User, String> {
    let found = match name.parse::<u32>() {
        Ok(uid) => User::from_uid(Uid::from_raw(uid)),
        Err(_) => User::from_name(name),
    };
    match found {
        Ok(Some(u)) => Ok(u),
        Ok(None) => Err(format!("--user {name}: no such user")),
        Err(e) => Err(format!("--user {name}: cannot look it up: {e}")),
    }
}

fn group(name: &str) -> Result<Gid, String> {
    if let Ok(gid) = name.parse::<u32>() {
        return Ok(Gid::from_raw(gid));
    }
    match Group::from_name(name) {
        Ok(Some(g)) => Ok(g.gid),
        Ok(None) => Err(format!("--group {name}: no such group")),
        Err(e) => Err(format!("--group {name}: cannot look it up: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn config(args: &[&str]) -> Config {
        let mut all = vec!["ferry"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--", "w"]);
        Config::parse_from(all)
    }

    #[test]
    fn unknown_names_and_root_are_start_up_errors_naming_them() {
        let e = Launch::from_config(&config(&["--user", "no-such-user-x"])).unwrap_err();
        assert!(
            e.contains("no-such-user-x") && e.contains("no such user"),
            "{e}"
        );
        let e = Launch::from_config(&config(&["--group", "no-such-group-x"])).unwrap_err();
        assert!(e.contains("no such group"), "{e}");
        let e = Launch::from_config(&config(&["--user", "root"])).unwrap_err();
        assert!(e.contains("--allow-root-workers"), "{e}");
        let e = Launch::from_config(&config(&["--chdir", "/no/such/dir"])).unwrap_err();
        assert!(e.contains("/no/such/dir"), "{e}");
        if Uid::effective().is_root() {
            let l = Launch::from_config(&config(&["--user", "0", "--allow-root-workers"]));
            let l = l.unwrap();
            assert_eq!((l.uid, l.gid), (Some(0), Some(0)));
            assert_eq!(l.env[0], ("HOME", "/root".to_string()));
        }
    }

    #[test]
    fn nothing_asked_changes_nothing() {
        let l = Launch::from_config(&config(&["--umask", "027"])).unwrap();
        assert_eq!((l.uid, l.gid, l.umask), (None, None, Some(0o027)));
        assert!(l.socket_owner().is_none());
    }
}
