//! `proxy`: parse the command line (and the config file), then run the
//! server. Nothing else.

use argh::FromArgs;
use ferry::cli::Args;
use ferry::config::Config;
use ferry::settings::Settings;

#[global_allocator]
static ALLOCATOR: ferry::alloc_count::CountingAlloc = ferry::alloc_count::CountingAlloc;

fn main() {
    let argv: Vec<String> = std::env::args().collect();
    let words: Vec<&str> = argv.iter().skip(1).map(String::as_str).collect();
    let args = match Args::from_args(&["proxy"], &words) {
        Ok(args) => args,
        Err(exit) if exit.status.is_ok() => {
            println!("{}", exit.output);
            return;
        }
        Err(exit) => {
            eprintln!("proxy: {}", exit.output.trim_end());
            eprintln!("Run proxy --help for the flags.");
            std::process::exit(2);
        }
    };
    // The flags are parsed into our own copies: `ps` need not show secrets.
    ferry::argv::hide_values_of(&["--auth"]);
    if args.version {
        println!("ferry {}", env!("CARGO_PKG_VERSION"));
        return;
    }
    if args.info {
        println!("{}", ferry::build_info());
        return;
    }
    let (config, reload) = match args.config.clone() {
        Some(path) => from_file(&args, path),
        None if args.check => {
            eprintln!("proxy: --check: give the file to check with -c FILE");
            std::process::exit(2);
        }
        None => match args.into_config() {
            Ok(config) => (config, None),
            Err(e) => {
                eprintln!("proxy: {e}");
                std::process::exit(2);
            }
        },
    };
    if let Err(e) = ferry::server::run(config, reload) {
        eprintln!("proxy: {e}");
        std::process::exit(1);
    }
}

/// The file's configuration under the flags, and the reload that makes it
/// again on SIGHUP with the same flags. `--check` exits here: 0 when the
/// file is good, 1 with every problem.
fn from_file(args: &Args, path: String) -> (Config, Option<ferry::server::Reload>) {
    let flags: Settings = match args.settings() {
        Ok(flags) => flags,
        Err(e) => {
            eprintln!("proxy: {e}");
            std::process::exit(2);
        }
    };
    match ferry::config_file::load_under(&path, &flags) {
        Ok(config) if args.check => {
            let n = config.listeners.len();
            println!("{path}: ok ({n} listener{})", if n == 1 { "" } else { "s" });
            std::process::exit(0);
        }
        Ok(config) => {
            let reload = move || ferry::config_file::load_under(&path, &flags);
            (config, Some(Box::new(reload)))
        }
        Err(problems) => {
            for p in &problems {
                eprintln!("{p}");
            }
            eprintln!(
                "proxy: {path}: {} problem{}",
                problems.len(),
                if problems.len() == 1 { "" } else { "s" }
            );
            std::process::exit(1);
        }
    }
}
