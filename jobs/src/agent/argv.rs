//! How a phase's `exec` string becomes the task's argv.
//!
//! SPEC §4: `exec` is a `bash -c` command. Most map commands are a program and plain words
//! (`wc -w`, `grep -c ERROR`, `sort -u`); for those, bash would only look the program up on
//! `PATH` and exec it, so the task runs it directly and saves starting bash (~2.5 ms of CPU,
//! about what `wc -w` itself costs on 128 KiB). Invariant: the direct form is used only when
//! bash would do exactly that — every word is made of characters bash gives no meaning to
//! (no quoting, expansion, globbing, redirection, comments, operators), the first word is not
//! a bash keyword, builtin or assignment, and there is no `init` (which needs a shell). The
//! task then sees the environment bash would have given it (`PWD`, `SHLVL=0`), and a program
//! not found exits 127 as under bash. Anything else goes to `bash -c` unchanged.

/// Exit status of the wrapper when `init` failed (see [`argv`]).
pub const INIT_FAILED: i32 = 198;

/// Words bash treats specially in command position.
const SHELL_WORDS: &[&str] = &[
    // keywords
    "if",
    "then",
    "else",
    "elif",
    "fi",
    "case",
    "esac",
    "for",
    "select",
    "while",
    "until",
    "do",
    "done",
    "in",
    "function",
    "time",
    "coproc",
    "{",
    "}",
    "!",
    "[[",
    "]]",
    // builtins
    ".",
    ":",
    "[",
    "alias",
    "bg",
    "bind",
    "break",
    "builtin",
    "caller",
    "cd",
    "command",
    "compgen",
    "complete",
    "compopt",
    "continue",
    "declare",
    "dirs",
    "disown",
    "echo",
    "enable",
    "eval",
    "exec",
    "exit",
    "export",
    "false",
    "fc",
    "fg",
    "getopts",
    "hash",
    "help",
    "history",
    "jobs",
    "kill",
    "let",
    "local",
    "logout",
    "mapfile",
    "popd",
    "printf",
    "pushd",
    "pwd",
    "read",
    "readarray",
    "readonly",
    "return",
    "set",
    "shift",
    "shopt",
    "source",
    "suspend",
    "test",
    "times",
    "trap",
    "true",
    "type",
    "typeset",
    "ulimit",
    "umask",
    "unalias",
    "unset",
    "wait",
];

/// Characters bash gives no meaning to inside an unquoted word.
fn plain(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-_./:=+,@%".contains(c)
}

/// `exec`'s words when running them directly is exactly what `bash -c exec` would do.
pub fn direct(exec: &str) -> Option<Vec<String>> {
    let words: Vec<&str> = exec.split([' ', '\t']).filter(|w| !w.is_empty()).collect();
    let first = *words.first()?;
    if !words.iter().all(|w| w.chars().all(plain))
        || first.contains('=')
        || SHELL_WORDS.contains(&first)
    {
        return None;
    }
    Some(words.into_iter().map(String::from).collect())
}

/// The task's argv and the environment it adds, for `exec` with an optional `init`.
pub fn argv(exec: &str, init: Option<&str>, cwd: &str) -> (Vec<String>, Vec<(String, String)>) {
    let bash = |cmd: String| vec!["bash".into(), "-c".into(), cmd];
    match (init, direct(exec)) {
        (None, Some(words)) => (
            words,
            vec![("PWD".into(), cwd.into()), ("SHLVL".into(), "0".into())],
        ),
        (None, None) => (bash(exec.into()), Vec::new()),
        (Some(init), _) => (
            bash(format!(
                "bash -c \"$MOBULA_INIT\" </dev/null >&2 || exit {INIT_FAILED}; exec bash -c \"$MOBULA_EXEC\""
            )),
            vec![
                ("MOBULA_INIT".into(), init.into()),
                ("MOBULA_EXEC".into(), exec.into()),
            ],
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_commands_run_directly() {
        assert_eq!(direct("wc -w").unwrap(), ["wc", "-w"]);
        assert_eq!(
            direct("  grep  -c\tERROR ").unwrap(),
            ["grep", "-c", "ERROR"]
        );
        assert_eq!(
            direct("/usr/bin/dd bs=1M status=none").unwrap(),
            ["/usr/bin/dd", "bs=1M", "status=none"]
        );
        assert_eq!(
            direct("mpipe -r 1 out.txt").unwrap(),
            ["mpipe", "-r", "1", "out.txt"]
        );
    }

    #[test]
    fn anything_bash_would_interpret_goes_to_bash() {
        for cmd in [
            "",
            "   ",
            "wc -w | sort",
            "awk '{s+=$1} END {print s}'",
            "grep \"a b\"",
            "echo $HOME",
            "ls *.txt",
            "cat a?",
            "ls [ab]",
            "cat > out",
            "cat < in",
            "a && b",
            "a; b",
            "sleep 1 &",
            "echo hi",
            "cd /tmp",
            "true",
            "exit 3",
            "time wc",
            "! grep x",
            "X=1 wc",
            "wc # comment",
            "ls ~",
            "echo {a,b}",
            "a\nb",
            "f(x)",
            "echo `id`",
            "wc\\ -l",
        ] {
            assert_eq!(direct(cmd), None, "{cmd:?}");
        }
    }

    #[test]
    fn argv_and_environment() {
        let (a, env) = argv("wc -w", None, "/tmp");
        assert_eq!(a, ["wc", "-w"]);
        assert!(env.contains(&("PWD".into(), "/tmp".into())));
        let (a, env) = argv("wc -w | cat", None, "/tmp");
        assert_eq!(a, ["bash", "-c", "wc -w | cat"]);
        assert!(env.is_empty());
        let (a, env) = argv("wc -w", Some("touch /tmp/x"), "/tmp");
        assert_eq!(a[0], "bash");
        assert!(env.contains(&("MOBULA_EXEC".into(), "wc -w".into())));
    }
}
