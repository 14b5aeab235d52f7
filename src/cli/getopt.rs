//! GNU `getopt_long`, as memcached 1.6 parses its command line: short
//! switches grouped (`-vv`, `-dA`, `-vp11211`), a short option's argument
//! attached or next (`-p11211`, `-p 11211`), long options with `=` or the
//! next argument (`--port=11211`, `--port 11211`), unambiguous prefixes of
//! long names (`--po 11211`), optional arguments only after `=`, `--` ending
//! the options, and words that are not options set aside wherever they are
//! (GNU's permutation; memcached ignores them). The errors are glibc's words.

/// Whether an option takes an argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arg {
    None,
    Required,
    /// Long form only, after `=` (`--verbose=2`); short form never takes one.
    Optional,
}

/// One option: its short letter, its long name, and its argument.
#[derive(Clone, Copy, Debug)]
pub struct Opt {
    pub short: Option<char>,
    pub long: &'static str,
    pub arg: Arg,
}

/// An option found: its index in the table and its argument.
#[derive(Debug, PartialEq, Eq)]
pub struct Found {
    pub opt: usize,
    pub value: Option<String>,
}

/// The result: options in order, and the words that were not options.
#[derive(Debug, Default)]
pub struct Parsed {
    pub found: Vec<Found>,
    pub operands: Vec<String>,
}

/// What glibc prints for a bad command line (after `PROGRAM: `).
#[derive(Debug, PartialEq, Eq)]
pub enum ParseError {
    InvalidShort(char),
    MissingShort(char),
    Unrecognized(String),
    Ambiguous { given: String, candidates: Vec<&'static str> },
    MissingLong(&'static str),
    Unexpected(&'static str),
}

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParseError::InvalidShort(c) => write!(f, "invalid option -- '{c}'"),
            ParseError::MissingShort(c) => write!(f, "option requires an argument -- '{c}'"),
            ParseError::Unrecognized(s) => write!(f, "unrecognized option '{s}'"),
            ParseError::Ambiguous { given, candidates } => {
                write!(f, "option '{given}' is ambiguous; possibilities:")?;
                for c in candidates {
                    write!(f, " '--{c}'")?;
                }
                Ok(())
            }
            ParseError::MissingLong(l) => write!(f, "option '--{l}' requires an argument"),
            ParseError::Unexpected(l) => write!(f, "option '--{l}' doesn't allow an argument"),
        }
    }
}

/// Parse `args` (without the program name) against `table`.
pub fn parse(args: &[String], table: &[Opt]) -> Result<Parsed, ParseError> {
    let mut out = Parsed::default();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        if a == "--" {
            out.operands.extend(args[i..].iter().cloned());
            break;
        }
        if let Some(body) = a.strip_prefix("--") {
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (body, None),
            };
            let opt = find_long(table, name, a)?;
            let o = &table[opt];
            let value = match (o.arg, inline) {
                (Arg::None, Some(_)) => return Err(ParseError::Unexpected(o.long)),
                (Arg::None, None) | (Arg::Optional, None) => None,
                (_, Some(v)) => Some(v),
                (Arg::Required, None) => match args.get(i) {
                    Some(v) => {
                        i += 1;
                        Some(v.clone())
                    }
                    None => return Err(ParseError::MissingLong(o.long)),
                },
            };
            out.found.push(Found { opt, value });
        } else if a.len() > 1 && a.starts_with('-') {
            let chars: Vec<char> = a[1..].chars().collect();
            let mut k = 0;
            while k < chars.len() {
                let c = chars[k];
                k += 1;
                let opt = table.iter().position(|o| o.short == Some(c)).ok_or(ParseError::InvalidShort(c))?;
                if table[opt].arg == Arg::Required {
                    let value = if k < chars.len() {
                        chars[k..].iter().collect()
                    } else {
                        let v = args.get(i).cloned().ok_or(ParseError::MissingShort(c))?;
                        i += 1;
                        v
                    };
                    out.found.push(Found { opt, value: Some(value) });
                    break;
                }
                out.found.push(Found { opt, value: None });
            }
        } else {
            out.operands.push(a.clone());
        }
    }
    Ok(out)
}

/// An exact long name, or the one long name `name` begins.
fn find_long(table: &[Opt], name: &str, given: &str) -> Result<usize, ParseError> {
    if let Some(i) = table.iter().position(|o| o.long == name) {
        return Ok(i);
    }
    let matches: Vec<usize> =
        (0..table.len()).filter(|&i| !name.is_empty() && table[i].long.starts_with(name)).collect();
    match matches.as_slice() {
        [one] => Ok(*one),
        [] => Err(ParseError::Unrecognized(given.to_string())),
        many => Err(ParseError::Ambiguous {
            given: given.to_string(),
            candidates: many.iter().map(|&i| table[i].long).collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &[Opt] = &[
        Opt { short: Some('p'), long: "port", arg: Arg::Required },
        Opt { short: Some('v'), long: "verbose", arg: Arg::Optional },
        Opt { short: Some('d'), long: "daemon", arg: Arg::None },
        Opt { short: Some('A'), long: "enable-shutdown", arg: Arg::None },
        Opt { short: Some('m'), long: "memory-limit", arg: Arg::Required },
        Opt { short: Some('e'), long: "memory-file", arg: Arg::Required },
        Opt { short: None, long: "replica-of", arg: Arg::Required },
    ];

    fn p(args: &[&str]) -> Result<Vec<(usize, Option<String>)>, ParseError> {
        let v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        parse(&v, T).map(|r| r.found.into_iter().map(|f| (f.opt, f.value)).collect())
    }

    fn some(s: &str) -> Option<String> {
        Some(s.to_string())
    }

    #[test]
    fn every_memcached_syntax() {
        for form in [&["-p", "11211"][..], &["-p11211"], &["--port=11211"], &["--port", "11211"], &["--po", "11211"]] {
            assert_eq!(p(form), Ok(vec![(0, some("11211"))]), "{form:?}");
        }
        assert_eq!(p(&["-vv"]), Ok(vec![(1, None), (1, None)]));
        assert_eq!(p(&["-dA"]), Ok(vec![(2, None), (3, None)]));
        assert_eq!(p(&["-vp11211"]), Ok(vec![(1, None), (0, some("11211"))]));
        assert_eq!(p(&["-dp", "1"]), Ok(vec![(2, None), (0, some("1"))]));
        assert_eq!(p(&["--verbose=2", "--verbose"]), Ok(vec![(1, some("2")), (1, None)]));
        assert_eq!(
            p(&["--replica-of", "shm://a", "--replica-of=shm://b"]),
            Ok(vec![(6, some("shm://a")), (6, some("shm://b"))])
        );
        // A value may start with '-'; `--` ends the options.
        assert_eq!(p(&["-p", "-5", "--", "-d"]), Ok(vec![(0, some("-5"))]));
        let v: Vec<String> = ["extra", "-d", "more", "--", "-A"].iter().map(|s| s.to_string()).collect();
        assert_eq!(parse(&v, T).unwrap().operands, ["extra", "more", "-A"]);
    }

    #[test]
    fn errors_in_glibc_words() {
        let e = |args: &[&str]| p(args).unwrap_err().to_string();
        assert_eq!(e(&["-x"]), "invalid option -- 'x'");
        assert_eq!(e(&["-dx"]), "invalid option -- 'x'");
        assert_eq!(e(&["-p"]), "option requires an argument -- 'p'");
        assert_eq!(e(&["--port"]), "option '--port' requires an argument");
        assert_eq!(e(&["--bogus"]), "unrecognized option '--bogus'");
        assert_eq!(e(&["--daemon=1"]), "option '--daemon' doesn't allow an argument");
        assert_eq!(e(&["--mem=5"]), "option '--mem=5' is ambiguous; possibilities: '--memory-limit' '--memory-file'");
    }
}
