//! `snap completions SHELL` and `snap man [COMMAND]`: generated from the
//! argument definitions, so they never drift from the binary.

use std::io::Write;

use clap::CommandFactory;

use crate::cli::Cli;

pub fn completions(shell: clap_complete::Shell, out: &mut impl Write) -> anyhow::Result<u8> {
    clap_complete::generate(shell, &mut Cli::command(), "snap", out);
    Ok(0)
}

/// The page of snap (which lists every command), or of one command.
pub fn man(command: Option<&str>, out: &mut impl Write) -> anyhow::Result<u8> {
    let mut cmd = Cli::command();
    cmd.build();
    let page = match command {
        None => cmd,
        Some(name) => {
            let sub = cmd
                .find_subcommand(name)
                .ok_or_else(|| anyhow::anyhow!("no command {name:?}; `snap man` lists them"))?;
            // clap names are &'static str; a page is made once per process.
            let title: &'static str = Box::leak(format!("snap-{name}").into_boxed_str());
            sub.clone().name(title)
        }
    };
    clap_mangen::Man::new(page).render(out)?;
    Ok(0)
}
