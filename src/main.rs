fn main() {
    let cli = sockmod::app::parse_args();
    std::process::exit(sockmod::app::run(cli));
}
