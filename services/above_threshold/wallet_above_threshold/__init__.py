"""The above_threshold processor: group ``above_threshold`` flags wallets that ever
received more than the threshold within one rolling window."""
