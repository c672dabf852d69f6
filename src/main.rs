use clap::Parser;

fn main() {
    let cli = sockmod::cli::Cli::parse();
    std::process::exit(sockmod::app::run(cli));
}
