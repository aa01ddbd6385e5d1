//! Hide secrets given on the command line from other users of the machine.
//!
//! `--auth USER:PASS` sits in the process's argument area, which anyone can
//! read through `ps` or `/proc/PID/cmdline`. Once the flags are parsed (the
//! program keeps its own copies), [`hide_values_of`] overwrites the value
//! after each such flag in that area with `x`s, as database clients do with
//! a password given as an argument. The value is visible for the moment
//! between exec and this call; `--auth-file` avoids even that.

/// Overwrite, in the process's argument area, every argument that follows
/// one of `flags` with `x`s. Does nothing if the area cannot be found.
pub fn hide_values_of(flags: &[&str]) {
    let Some((start, end)) = arg_area() else {
        return;
    };
    let len = end.saturating_sub(start);
    if start == 0 || len == 0 {
        return;
    }
    // SAFETY: the kernel reports [start, end) as this process's argument
    // strings: memory of our own, mapped readable and writable for the life
    // of the process (it is the initial stack). Nothing in the program holds
    // a Rust reference into it: std copied the arguments into Strings when
    // `std::env::args` was read. The slice lives only inside this function.
    let area = unsafe { std::slice::from_raw_parts_mut(start as *mut u8, len) };
    hide_in(area, flags);
}

/// Overwrite the value after each of `flags` in `area`, a run of
/// NUL-terminated arguments (the last terminator may be cut off).
fn hide_in(area: &mut [u8], flags: &[&str]) {
    let mut hide_next = false;
    for arg in area.split_mut(|&b| b == 0) {
        if hide_next {
            arg.fill(b'x');
        }
        hide_next = flags.iter().any(|f| arg == f.as_bytes());
    }
}

/// The argument area's bounds: fields 48 and 49 (arg_start, arg_end) of
/// `/proc/self/stat`, counted after the command name in parentheses (which
/// may itself hold spaces).
fn arg_area() -> Option<(usize, usize)> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    // Field 3 (state) is the first after the name.
    let mut fields = after_name.split_whitespace().skip(48 - 3);
    let start = fields.next()?.parse().ok()?;
    let end = fields.next()?.parse().ok()?;
    Some((start, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_after_the_flags_are_hidden_and_nothing_else() {
        let mut area = b"proxy\0--auth\0u:secret\0-p\0--auth\0v:pw\0--auth-file\0f".to_vec();
        hide_in(&mut area, &["--auth"]);
        assert_eq!(
            area,
            b"proxy\0--auth\0xxxxxxxx\0-p\0--auth\0xxxx\0--auth-file\0f".to_vec()
        );
        // A flag last, with nothing after it, hides nothing.
        let mut area = b"proxy\0--auth\0".to_vec();
        hide_in(&mut area, &["--auth"]);
        assert_eq!(area, b"proxy\0--auth\0".to_vec());
    }

    #[test]
    fn the_argument_area_of_this_process_is_found() {
        let (start, end) = arg_area().expect("arg_start and arg_end in /proc/self/stat");
        let cmdline = std::fs::read("/proc/self/cmdline").unwrap();
        assert_eq!(end - start, cmdline.len());
    }
}
