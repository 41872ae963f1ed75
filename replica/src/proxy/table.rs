//! The upstream's own command table (`COMMAND`), read at start: which
//! commands exist, how many arguments each takes, which write (the `write`
//! flag says what the read-only token may not run — DESIGN.md,
//! "Proxy mode"), and where their keys are.

use std::collections::HashMap;

use bytes::Bytes;
use redis_protocol::resp2::types::{BytesFrame, Resp2Frame};

pub use super::error::TableError;
use super::upstream::{text, Conn};

/// What the table says about one command (or subcommand).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommandInfo {
    /// Lowercase, `container|sub` for subcommands.
    pub name: String,
    /// Exact argument count (name included) when positive; at least
    /// `-arity` when negative.
    pub arity: i64,
    pub flags: Flags,
    /// 1-based positions of the keys: first, last (negative counts from the
    /// end), step; 0 when the command has no fixed key positions.
    pub first_key: i64,
    pub last_key: i64,
    pub step: i64,
    pub subcommands: HashMap<String, CommandInfo>,
}

/// The flags this proxy acts on.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Flags {
    pub write: bool,
    pub readonly: bool,
    pub admin: bool,
    pub pubsub: bool,
    pub blocking: bool,
    pub movablekeys: bool,
    pub no_multi: bool,
    /// May write though not flagged `write` (scripts, functions, PUBLISH).
    pub may_replicate: bool,
}

/// Every command the upstream knows.
#[derive(Clone, Debug, Default)]
pub struct CommandTable {
    commands: HashMap<String, CommandInfo>,
}

/// Why a command cannot run as given, in Redis's own words.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup<'a> {
    Found(&'a CommandInfo),
    /// `ERR unknown command ...` / `ERR unknown subcommand ...` / arity.
    Invalid(String),
}

impl CommandTable {
    /// Reads `COMMAND` from the upstream.
    pub async fn load(conn: &mut Conn) -> Result<CommandTable, TableError> {
        let reply = conn.call(["COMMAND"]).await?;
        CommandTable::parse(&reply).map_err(|why| TableError::Malformed {
            addr: conn.addr().to_string(),
            why,
        })
    }

    /// Parses a `COMMAND` reply.
    pub fn parse(reply: &BytesFrame) -> Result<CommandTable, String> {
        let BytesFrame::Array(entries) = reply else {
            return Err(format!("expected an array, got {:?}", reply.kind()));
        };
        let mut commands = HashMap::new();
        for e in entries {
            let info = parse_entry(e)?;
            commands.insert(info.name.clone(), info);
        }
        if !commands.contains_key("set") || !commands.contains_key("get") {
            return Err("the table has no SET or GET".into());
        }
        Ok(CommandTable { commands })
    }

    /// Finds the command (and subcommand) `argv` names and checks its
    /// arity, answering as Redis would when it cannot run; `name` is its
    /// first argument as a [`Name`].
    pub fn lookup(&self, name: &str, argv: &[Bytes]) -> Lookup<'_> {
        let Some(info) = self.commands.get(name) else {
            return Lookup::Invalid(unknown_command(argv));
        };
        let info = if info.subcommands.is_empty() {
            info
        } else if argv.len() < 2 {
            return Lookup::Invalid(wrong_arity(name));
        } else {
            let sub = String::from_utf8_lossy(&argv[1]).to_lowercase();
            match info.subcommands.get(&format!("{name}|{sub}")) {
                Some(s) => s,
                None => {
                    return Lookup::Invalid(format!(
                        "ERR unknown subcommand '{}'. Try {} HELP.",
                        String::from_utf8_lossy(&argv[1]),
                        name.to_uppercase()
                    ))
                }
            }
        };
        let argc = argv.len() as i64;
        let ok = if info.arity >= 0 {
            argc == info.arity
        } else {
            argc >= -info.arity
        };
        if !ok {
            return Lookup::Invalid(wrong_arity(&info.name));
        }
        Lookup::Found(info)
    }

    /// The keys at the command's fixed key positions (not for commands with
    /// `movablekeys`: ask the upstream with `COMMAND GETKEYS`).
    pub fn fixed_keys(info: &CommandInfo, argv: &[Bytes]) -> Vec<Bytes> {
        if info.first_key <= 0 || info.step <= 0 {
            return Vec::new();
        }
        let argc = argv.len() as i64;
        let last = if info.last_key < 0 {
            argc + info.last_key
        } else {
            info.last_key
        };
        let mut keys = Vec::new();
        let mut i = info.first_key;
        while i <= last && i < argc {
            keys.push(argv[i as usize].clone());
            i += info.step;
        }
        keys
    }
}

fn unknown_command(argv: &[Bytes]) -> String {
    let args: Vec<String> = argv[1..]
        .iter()
        .take(8)
        .map(|a| format!("'{}'", String::from_utf8_lossy(a)))
        .collect();
    format!(
        "ERR unknown command '{}', with args beginning with: {}",
        String::from_utf8_lossy(&argv[0]),
        args.join(" ")
    )
}

fn wrong_arity(name: &str) -> String {
    format!("ERR wrong number of arguments for '{name}' command")
}

fn parse_entry(frame: &BytesFrame) -> Result<CommandInfo, String> {
    let BytesFrame::Array(f) = frame else {
        return Err("a command entry that is not an array".into());
    };
    if f.len() < 6 {
        return Err(format!("a command entry of {} fields", f.len()));
    }
    let name = text(&f[0])
        .ok_or("a command without a name")?
        .to_lowercase();
    let int = |i: usize| match &f[i] {
        BytesFrame::Integer(n) => Ok(*n),
        other => Err(format!(
            "field {i} of {name} is {:?}, not an integer",
            other.kind()
        )),
    };
    let mut flags = Flags::default();
    if let BytesFrame::Array(list) = &f[2] {
        for flag in list.iter().filter_map(text) {
            match flag.as_str() {
                "write" => flags.write = true,
                "readonly" => flags.readonly = true,
                "admin" => flags.admin = true,
                "pubsub" => flags.pubsub = true,
                "blocking" => flags.blocking = true,
                "movablekeys" => flags.movablekeys = true,
                "may_replicate" => flags.may_replicate = true,
                "no_multi" => flags.no_multi = true,
                _ => {}
            }
        }
    }
    let mut subcommands = HashMap::new();
    if let Some(BytesFrame::Array(subs)) = f.get(9) {
        for s in subs {
            let sub = parse_entry(s)?;
            subcommands.insert(sub.name.clone(), sub);
        }
    }
    Ok(CommandInfo {
        arity: int(1)?,
        flags,
        first_key: int(3)?,
        last_key: int(4)?,
        step: int(5)?,
        subcommands,
        name,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::request::Name;

    fn bulk(b: String) -> BytesFrame {
        BytesFrame::BulkString(b.into())
    }

    fn entry(name: &str, arity: i64, flags: &[&str], keys: (i64, i64, i64)) -> BytesFrame {
        BytesFrame::Array(vec![
            bulk(name.to_string()),
            BytesFrame::Integer(arity),
            BytesFrame::Array(
                flags
                    .iter()
                    .map(|f| BytesFrame::SimpleString(Bytes::copy_from_slice(f.as_bytes())))
                    .collect(),
            ),
            BytesFrame::Integer(keys.0),
            BytesFrame::Integer(keys.1),
            BytesFrame::Integer(keys.2),
        ])
    }

    fn table() -> CommandTable {
        let mut object = entry("object", -2, &[], (0, 0, 0));
        if let BytesFrame::Array(f) = &mut object {
            f.extend([
                BytesFrame::Array(vec![]),
                BytesFrame::Array(vec![]),
                BytesFrame::Array(vec![]),
                BytesFrame::Array(vec![entry("object|encoding", 3, &["readonly"], (2, 2, 1))]),
            ]);
        }
        CommandTable::parse(&BytesFrame::Array(vec![
            entry("set", -3, &["write", "denyoom"], (1, 1, 1)),
            entry("get", 2, &["readonly", "fast"], (1, 1, 1)),
            entry("mset", -3, &["write"], (1, -1, 2)),
            object,
        ]))
        .unwrap()
    }

    fn find<'a>(t: &'a CommandTable, argv: &[Bytes]) -> Lookup<'a> {
        t.lookup(&Name::of(&argv[0]), argv)
    }

    fn argv(parts: &[&str]) -> Vec<Bytes> {
        parts
            .iter()
            .map(|p| Bytes::copy_from_slice(p.as_bytes()))
            .collect()
    }

    #[test]
    fn lookups_check_names_subcommands_and_arity_as_redis_does() {
        let t = table();
        let Lookup::Found(set) = find(&t, &argv(&["SeT", "k", "v"])) else {
            panic!()
        };
        assert!(set.flags.write);
        assert_eq!(
            find(&t, &argv(&["GET"])),
            Lookup::Invalid("ERR wrong number of arguments for 'get' command".into())
        );
        assert_eq!(
            find(&t, &argv(&["nope", "a"])),
            Lookup::Invalid("ERR unknown command 'nope', with args beginning with: 'a'".into())
        );
        let Lookup::Found(enc) = find(&t, &argv(&["OBJECT", "encoding", "k"])) else {
            panic!()
        };
        assert!(enc.flags.readonly);
        assert!(
            matches!(find(&t, &argv(&["object", "bogus", "k"])), Lookup::Invalid(e) if e.contains("unknown subcommand 'bogus'"))
        );
    }

    #[test]
    fn fixed_keys_follow_first_last_and_step() {
        let t = table();
        let a = argv(&["MSET", "a", "1", "b", "2", "c", "3"]);
        let Lookup::Found(mset) = find(&t, &a) else {
            panic!()
        };
        assert_eq!(CommandTable::fixed_keys(mset, &a), argv(&["a", "b", "c"]));
        let a = argv(&["OBJECT", "ENCODING", "k"]);
        let Lookup::Found(enc) = find(&t, &a) else {
            panic!()
        };
        assert_eq!(CommandTable::fixed_keys(enc, &a), argv(&["k"]));
    }
}
