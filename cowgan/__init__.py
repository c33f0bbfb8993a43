"""The `cowgan` command line: thin subcommands over CircleOfWillisGANLib and the training package."""
