//! How the command line is parsed and how a usage error is reported: one `error:` line
//! on stderr and exit status 1, as for every other error (README, "Using the CLI"),
//! instead of clap's several lines and status 2.

use clap::{CommandFactory, FromArgMatches};

use super::{Cli, DEFAULT_API};

/// Subcommands that never talk to a running router: `--api` means nothing there, so
/// it is hidden from their help (it stays accepted, being global).
const NO_API: &[&str] = &[
    "serve",
    "check-config",
    "simulate",
    "init",
    "man",
    "completions",
];

/// The full command tree as users see it (help, man pages, completions).
pub fn command() -> clap::Command {
    let mut cmd = Cli::command();
    for name in NO_API {
        if cmd.find_subcommand(name).is_some() {
            // A subcommand that has its own `api` does not get the global one; this
            // one is hidden and accepted so `router --api X serve` still parses.
            cmd = cmd.mut_subcommand(name, |s| {
                s.arg(
                    clap::Arg::new("api")
                        .long("api")
                        .hide(true)
                        .env("WISP_API")
                        .default_value(DEFAULT_API),
                )
            });
        }
    }
    cmd
}

/// What `main` does when the arguments do not parse.
#[derive(Debug)]
pub enum Parsed {
    Run(Box<Cli>),
    /// `--help` or `--version`: print this on stdout, exit 0.
    Info(String),
    /// A usage error, as one line starting with `error:`.
    Usage(String),
}

/// Parses `args` (the program name first).
pub fn parse<I, T>(args: I) -> Parsed
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let matches = match command().try_get_matches_from(args) {
        Ok(m) => m,
        Err(e) => return from_error(&e),
    };
    match Cli::from_arg_matches(&matches) {
        Ok(cli) => Parsed::Run(Box::new(cli)),
        Err(e) => from_error(&e),
    }
}

fn from_error(e: &clap::Error) -> Parsed {
    use clap::error::ErrorKind;
    let text = e.render().to_string();
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => Parsed::Info(text),
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            // clap printed the whole help here; the first help line names the command.
            let usage = text
                .lines()
                .find_map(|l| l.trim().strip_prefix("Usage: "))
                .unwrap_or("router <COMMAND>")
                .to_owned();
            Parsed::Usage(format!(
                "error: a subcommand is missing: {usage} (see --help)"
            ))
        }
        _ => Parsed::Usage(one_line(&text)),
    }
}

/// clap's message without its usage block, on one line.
fn one_line(text: &str) -> String {
    let words: Vec<&str> = text
        .lines()
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .flat_map(str::split_whitespace)
        .collect();
    let msg = words.join(" ");
    let msg = msg.strip_prefix("error: ").unwrap_or(&msg);
    format!("error: {msg} (see --help)")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(args: &[&str]) -> String {
        match parse(args.iter().copied()) {
            Parsed::Usage(u) => u,
            other => panic!("{args:?}: expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn usage_errors_are_one_error_line() {
        for args in [
            &["router", "bogus"][..],
            &["router", "vm", "start"],
            &["router", "vm"],
            &["router", "power", "status", "--nope"],
            &["router", "events", "--limit", "x"],
        ] {
            let u = usage(args);
            assert!(u.starts_with("error: "), "{args:?}: {u}");
            assert!(!u.contains('\n'), "{args:?}: {u}");
        }
        assert!(usage(&["router", "vm", "start"]).contains("<NAME>"));
        assert!(usage(&["router", "bogus"]).contains("'bogus'"));
    }

    #[test]
    fn help_is_info_not_error() {
        assert!(matches!(parse(["router", "--help"]), Parsed::Info(_)));
        assert!(matches!(
            parse(["router", "vm", "stop", "-h"]),
            Parsed::Info(_)
        ));
        assert!(matches!(parse(["router", "hosts"]), Parsed::Run(_)));
    }

    /// Every subcommand and every argument says what it is for.
    #[test]
    fn every_command_and_argument_has_help() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                let id = a.get_id().as_str();
                if a.is_hide_set() || id == "help" || id == "version" {
                    continue;
                }
                if a.get_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for s in cmd.get_subcommands() {
                let p = format!("{path} {}", s.get_name());
                if s.get_name() != "help" && s.get_about().is_none() {
                    missing.push(p.clone());
                }
                walk(s, &p, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&command(), "router", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:#?}");
    }

    #[test]
    fn api_is_hidden_where_it_means_nothing() {
        let mut cmd = command();
        // Global args reach the subcommands when the tree is built (as for parsing).
        cmd.build();
        let hidden = |name: &str| {
            cmd.find_subcommand(name)
                .and_then(|s| s.get_arguments().find(|a| a.get_id() == "api"))
                .map(|a| a.is_hide_set())
        };
        assert_eq!(hidden("serve"), Some(true));
        assert_eq!(hidden("simulate"), Some(true));
        assert_eq!(hidden("hosts"), Some(false));
    }
}
