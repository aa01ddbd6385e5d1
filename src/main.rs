//! `proxy`: parse the command line, then run the server. Nothing else.

use argh::FromArgs;
use ferry::cli::Args;

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
    if args.version {
        println!("ferry {}", env!("CARGO_PKG_VERSION"));
        return;
    }
    if args.info {
        println!("{}", ferry::build_info());
        return;
    }
    let config = match args.into_config() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("proxy: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = ferry::server::run(config, None) {
        eprintln!("proxy: {e}");
        std::process::exit(1);
    }
}
