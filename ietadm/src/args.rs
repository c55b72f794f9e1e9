//! ietadm's command line, read the way IET's getopt_long did (optstring
//! `o:t:s:c:l:r:p:uvh`, see ietadm(8)), plus `--socket PATH`.
//!
//! Hand-written rather than clap because IET scripts depend on getopt behaviour clap
//! does not reproduce: unique-prefix long options (`--par` = `--params`), `-t1` and
//! clustered short options, `--params` and `--redirect` writing one shared slot (the
//! later wins), option order deciding whether `--help` wins, and usage errors exiting
//! 255 with IET's "Try `ietadm --help'" line rather than clap's status 2.

use std::fmt;
use std::path::PathBuf;

use ietd_proto::Direction;

/// Printed by `--help`.
pub const USAGE: &str = "\
Usage: ietadm [OPTION]
iSCSI Enterprise Target administration (for ietd on Linux LIO)

  --op new --tid=[id] --params Name=[name]
                        add a new target; tid 0 (or no --tid) allocates the next id
  --op delete --tid=[id]
                        delete a target (refused while it has sessions)
  --op show --tid=[id]  show target parameters
  --op show --tid=[id] --sid=[sid]
                        show session parameters (sid 0: the target's defaults)
  --op update --tid=[id] --params=key1=value1,key2=value2,...
                        change the target's default session/target parameters
  --op update --tid=[id] --redirect=ip[:port]
                        redirect logins to another portal (empty clears)
  --op delete --tid=[id] --sid=[sid] [--cid=[cid]]
                        close a connection (LIO: the initiator's sessions on the
                        target end; it may log in again)
  --op new --tid=[id] --lun=[lun] --params Path=[path],Type=[type],...
                        add a logical unit (Type fileio|blockio|nullio, IOMode wt|wb|ro,
                        BlockSize or Sector 512|1024|2048|4096, ScsiId, ScsiSN)
  --op delete --tid=[id] --lun=[lun]
                        delete a logical unit (again, if a first delete failed halfway)
  --op show --tid=[id] --lun=[lun]
                        show a logical unit: state 0 running, 1 being deleted,
                        2 failed (not served), and the problem if any
  --op new [--tid=[id]] --user --params=[user]=[name],Password=[pass]
                        add an account; [user] is IncomingUser or OutgoingUser;
                        without --tid (or with 0) it is a discovery account
  --op delete [--tid=[id]] --user --params=[user]=[name]
                        delete an account
  --op show [--tid=[id]] --user
                        list account names
  --op show [--tid=[id]] --user --params=[user]=[name]
                        show an account with its password
  --op show             list targets and LUNs (/proc/net/iet/volume format)
  --op delete           no-op kept for IET scripts (IET left iSNS here)
  --socket PATH         ietd's control socket (default $IETD_SOCKET or
                        /run/ietd/ietadm.sock)
  --version             print the version and exit
  --help                print this help and exit
";

/// The four operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    New,
    Delete,
    Update,
    Show,
}

/// `--op` as given: IET compares exactly and case-sensitively; anything else is kept
/// to be reported as "You must specify the operation type".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Valid(OpKind),
    Invalid(String),
}

/// Which of IET's selector options were given.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flags(u8);

impl Flags {
    pub const TARGET: Flags = Flags(1);
    pub const SESSION: Flags = Flags(2);
    pub const CONNECTION: Flags = Flags(4);
    pub const LUNIT: Flags = Flags(8);
    pub const USER: Flags = Flags(16);
    pub const REDIRECT: Flags = Flags(32);

    pub fn has(self, f: Flags) -> bool {
        self.0 & f.0 != 0
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    fn set(&mut self, f: Flags) {
        self.0 |= f.0;
    }
}

/// The parsed command line.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Opts {
    pub op: Option<Op>,
    pub tid: u32,
    pub sid: u64,
    pub cid: u32,
    pub lun: u32,
    /// The `--params` / `--redirect` slot.
    pub params: Option<String>,
    pub flags: Flags,
    pub socket: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Run(Opts),
    Help,
    Version,
}

/// A command line IET would have refused (exit 255), or a number we refuse (EINVAL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UsageError {
    UnknownLong(String),
    UnknownShort(char),
    Ambiguous {
        given: String,
        candidates: Vec<&'static str>,
    },
    MissingLong(&'static str),
    MissingShort(char),
    NoArgumentAllowed(&'static str),
    /// Leftover non-option arguments, concatenated as IET printed them.
    Unrecognized(String),
    /// Not a decimal number in range (IET's strtoul silently made such values 0).
    Number {
        detail: String,
    },
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UsageError::UnknownLong(o) => write!(f, "unrecognized option '--{o}'"),
            UsageError::UnknownShort(c) => write!(f, "invalid option -- '{c}'"),
            UsageError::Ambiguous { given, candidates } => {
                write!(f, "option '--{given}' is ambiguous; possibilities:")?;
                for c in candidates {
                    write!(f, " '--{c}'")?;
                }
                Ok(())
            }
            UsageError::MissingLong(o) => write!(f, "option '--{o}' requires an argument"),
            UsageError::MissingShort(c) => write!(f, "option requires an argument -- '{c}'"),
            UsageError::NoArgumentAllowed(o) => {
                write!(f, "option '--{o}' doesn't allow an argument")
            }
            UsageError::Unrecognized(s) => write!(f, "unrecognized: {s}"),
            UsageError::Number { detail } => f.write_str(detail),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opt {
    Op,
    Tid,
    Sid,
    Cid,
    Lun,
    Params,
    Redirect,
    User,
    Version,
    Help,
    Socket,
}

struct OptDef {
    long: &'static str,
    short: Option<char>,
    opt: Opt,
    has_arg: bool,
}

const OPTIONS: [OptDef; 11] = [
    OptDef {
        long: "op",
        short: Some('o'),
        opt: Opt::Op,
        has_arg: true,
    },
    OptDef {
        long: "tid",
        short: Some('t'),
        opt: Opt::Tid,
        has_arg: true,
    },
    OptDef {
        long: "sid",
        short: Some('s'),
        opt: Opt::Sid,
        has_arg: true,
    },
    OptDef {
        long: "cid",
        short: Some('c'),
        opt: Opt::Cid,
        has_arg: true,
    },
    OptDef {
        long: "lun",
        short: Some('l'),
        opt: Opt::Lun,
        has_arg: true,
    },
    OptDef {
        long: "params",
        short: Some('p'),
        opt: Opt::Params,
        has_arg: true,
    },
    OptDef {
        long: "redirect",
        short: Some('r'),
        opt: Opt::Redirect,
        has_arg: true,
    },
    OptDef {
        long: "user",
        short: Some('u'),
        opt: Opt::User,
        has_arg: false,
    },
    OptDef {
        long: "version",
        short: Some('v'),
        opt: Opt::Version,
        has_arg: false,
    },
    OptDef {
        long: "help",
        short: Some('h'),
        opt: Opt::Help,
        has_arg: false,
    },
    OptDef {
        long: "socket",
        short: None,
        opt: Opt::Socket,
        has_arg: true,
    },
];

/// getopt_long's lookup: an exact name, else a unique prefix.
fn lookup_long(name: &str) -> Result<&'static OptDef, UsageError> {
    if let Some(d) = OPTIONS.iter().find(|d| d.long == name) {
        return Ok(d);
    }
    let matches: Vec<&'static OptDef> = OPTIONS
        .iter()
        .filter(|d| !name.is_empty() && d.long.starts_with(name))
        .collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(UsageError::UnknownLong(name.to_string())),
        many => Err(UsageError::Ambiguous {
            given: name.to_string(),
            candidates: many.iter().map(|d| d.long).collect(),
        }),
    }
}

/// A strictly decimal number that fits `T`.
fn number<T: TryFrom<u64>>(opt: &str, value: &str) -> Result<T, UsageError> {
    let parsed = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        value.parse::<u64>().ok().and_then(|n| T::try_from(n).ok())
    } else {
        None
    };
    parsed.ok_or_else(|| UsageError::Number {
        detail: format!("--{opt} \"{value}\" is not a decimal number in range"),
    })
}

/// Parses the arguments after the program name.
pub fn parse(argv: &[String]) -> Result<Parsed, UsageError> {
    let mut o = Opts::default();
    let mut leftover: Vec<&str> = Vec::new();
    // IET never failed on a number, so a bad one must not hide a later --help or a
    // usage error: remember it and report it once the whole line was read.
    let mut bad_number: Option<UsageError> = None;
    let mut i = 0;
    while i < argv.len() {
        let arg = argv[i].as_str();
        i += 1;
        if arg == "--" {
            leftover.extend(argv[i..].iter().map(String::as_str));
            break;
        }
        if let Some(long) = arg.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v)),
                None => (long, None),
            };
            let def = lookup_long(name)?;
            let value = if def.has_arg {
                match inline {
                    Some(v) => Some(v.to_string()),
                    None if i < argv.len() => {
                        i += 1;
                        Some(argv[i - 1].clone())
                    }
                    None => return Err(UsageError::MissingLong(def.long)),
                }
            } else if inline.is_some() {
                return Err(UsageError::NoArgumentAllowed(def.long));
            } else {
                None
            };
            if let Some(done) = apply(&mut o, def, value, &mut bad_number) {
                return Ok(done);
            }
        } else if arg.len() > 1 && arg.starts_with('-') {
            let body = &arg[1..];
            for (pos, c) in body.char_indices() {
                let def = OPTIONS
                    .iter()
                    .find(|d| d.short == Some(c))
                    .ok_or(UsageError::UnknownShort(c))?;
                if def.has_arg {
                    let attached = &body[pos + c.len_utf8()..];
                    let value = if !attached.is_empty() {
                        attached.to_string()
                    } else if i < argv.len() {
                        i += 1;
                        argv[i - 1].clone()
                    } else {
                        return Err(UsageError::MissingShort(c));
                    };
                    if let Some(done) = apply(&mut o, def, Some(value), &mut bad_number) {
                        return Ok(done);
                    }
                    break;
                }
                if let Some(done) = apply(&mut o, def, None, &mut bad_number) {
                    return Ok(done);
                }
            }
        } else {
            leftover.push(arg);
        }
    }
    if !leftover.is_empty() {
        return Err(UsageError::Unrecognized(leftover.concat()));
    }
    if let Some(e) = bad_number {
        return Err(e);
    }
    Ok(Parsed::Run(o))
}

/// Applies one option; returns `Some` when it ends parsing (help, version).
fn apply(
    o: &mut Opts,
    def: &OptDef,
    value: Option<String>,
    bad_number: &mut Option<UsageError>,
) -> Option<Parsed> {
    let v = value.unwrap_or_default();
    let mut num_err = |e: UsageError| {
        bad_number.get_or_insert(e);
    };
    match def.opt {
        Opt::Op => {
            o.op = Some(match v.as_str() {
                "new" => Op::Valid(OpKind::New),
                "delete" => Op::Valid(OpKind::Delete),
                "update" => Op::Valid(OpKind::Update),
                "show" => Op::Valid(OpKind::Show),
                _ => Op::Invalid(v),
            })
        }
        Opt::Tid => {
            o.flags.set(Flags::TARGET);
            number(def.long, &v)
                .map(|n| o.tid = n)
                .unwrap_or_else(&mut num_err);
        }
        Opt::Sid => {
            o.flags.set(Flags::SESSION);
            number(def.long, &v)
                .map(|n| o.sid = n)
                .unwrap_or_else(&mut num_err);
        }
        Opt::Cid => {
            o.flags.set(Flags::CONNECTION);
            number(def.long, &v)
                .map(|n| o.cid = n)
                .unwrap_or_else(&mut num_err);
        }
        Opt::Lun => {
            o.flags.set(Flags::LUNIT);
            number(def.long, &v)
                .map(|n| o.lun = n)
                .unwrap_or_else(&mut num_err);
        }
        Opt::Params => o.params = Some(v),
        Opt::Redirect => {
            o.flags.set(Flags::REDIRECT);
            o.params = Some(v);
        }
        Opt::User => o.flags.set(Flags::USER),
        Opt::Version => return Some(Parsed::Version),
        Opt::Help => return Some(Parsed::Help),
        Opt::Socket => o.socket = Some(PathBuf::from(v)),
    }
    None
}

/// The `--params` of `--user` requests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountParams {
    pub user: Option<(Direction, String)>,
    pub password: Option<String>,
}

/// Reads `IncomingUser=NAME` / `OutgoingUser=NAME` / `Password=PW`, keys
/// case-insensitive, one space after `=` skipped (IET's rules). An empty password counts
/// as none.
pub fn parse_account(params: &str) -> Result<AccountParams, String> {
    let mut out = AccountParams::default();
    for item in params.split(',').filter(|i| !i.is_empty()) {
        let Some((key, value)) = item.split_once('=') else {
            return Err(format!("Unknown parameter \"{item}\" (expected Key=Value)"));
        };
        let value = value.strip_prefix(' ').unwrap_or(value).to_string();
        match key.to_ascii_lowercase().as_str() {
            "incominguser" => out.user = Some((Direction::Incoming, value)),
            "outgoinguser" => out.user = Some((Direction::Outgoing, value)),
            "password" => out.password = Some(value).filter(|p| !p.is_empty()),
            _ => {
                return Err(format!(
                    "Unknown parameter \"{key}\" (expected IncomingUser, OutgoingUser or Password)"
                ))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Parsed, UsageError> {
        parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    fn run(args: &[&str]) -> Opts {
        match p(args) {
            Ok(Parsed::Run(o)) => o,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn both_long_forms_and_short_forms() {
        let a = run(&["--op", "new", "--tid=1", "--params", "Name=x"]);
        let b = run(&["--op=new", "--tid", "1", "--params=Name=x"]);
        let c = run(&["-onew", "-t", "1", "-pName=x"]);
        assert_eq!(a, b);
        assert_eq!(a, c);
        assert_eq!(a.op, Some(Op::Valid(OpKind::New)));
        assert_eq!(a.tid, 1);
        assert!(a.flags.has(Flags::TARGET));
        assert_eq!(a.params.as_deref(), Some("Name=x"));
    }

    #[test]
    fn prefixes_clusters_and_shared_slot() {
        let o = run(&[
            "--o",
            "show",
            "--ti=3",
            "-ut",
            "4",
            "--par",
            "IncomingUser=a",
        ]);
        assert_eq!(o.tid, 4);
        assert!(o.flags.has(Flags::USER));
        let o = run(&[
            "--op",
            "update",
            "--tid=1",
            "--params=A=1",
            "--redirect=1.2.3.4",
        ]);
        assert!(o.flags.has(Flags::REDIRECT));
        assert_eq!(o.params.as_deref(), Some("1.2.3.4"));
        let o = run(&[
            "--op",
            "update",
            "--tid=1",
            "--redirect=1.2.3.4",
            "--params=A=1",
        ]);
        assert!(o.flags.has(Flags::REDIRECT));
        assert_eq!(o.params.as_deref(), Some("A=1"));
        assert!(matches!(
            p(&["--s", "1"]),
            Err(UsageError::Ambiguous { .. })
        ));
        assert_eq!(
            run(&["--socket", "/tmp/x"]).socket,
            Some(PathBuf::from("/tmp/x"))
        );
    }

    #[test]
    fn errors_and_early_exits() {
        assert_eq!(
            p(&["--bogus"]),
            Err(UsageError::UnknownLong("bogus".into()))
        );
        assert_eq!(p(&["-x"]), Err(UsageError::UnknownShort('x')));
        assert_eq!(p(&["--tid"]), Err(UsageError::MissingLong("tid")));
        assert_eq!(p(&["-t"]), Err(UsageError::MissingShort('t')));
        assert_eq!(p(&["--user=1"]), Err(UsageError::NoArgumentAllowed("user")));
        assert_eq!(
            p(&["--op", "show", "a", "b"]),
            Err(UsageError::Unrecognized("ab".into()))
        );
        assert_eq!(p(&["--tid=abc", "--help"]), Ok(Parsed::Help));
        assert_eq!(p(&["-v"]), Ok(Parsed::Version));
        assert!(matches!(p(&["--tid=abc"]), Err(UsageError::Number { .. })));
        assert!(matches!(
            p(&["--tid=4294967296"]),
            Err(UsageError::Number { .. })
        ));
        assert!(matches!(p(&["--tid=-1"]), Err(UsageError::Number { .. })));
        assert_eq!(run(&["--sid=18446744073709551615"]).sid, u64::MAX);
        assert_eq!(run(&["--op", "New"]).op, Some(Op::Invalid("New".into())));
    }

    #[test]
    fn account_params() {
        let a = parse_account("incominguser= joe,PASSWORD=pw").unwrap();
        assert_eq!(a.user, Some((Direction::Incoming, "joe".into())));
        assert_eq!(a.password.as_deref(), Some("pw"));
        let a = parse_account("OutgoingUser=o,,Password=").unwrap();
        assert_eq!(a.user, Some((Direction::Outgoing, "o".into())));
        assert_eq!(a.password, None);
        assert!(parse_account("Name=x").is_err());
    }
}
