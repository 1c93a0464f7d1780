"""The balance processor: group ``balance`` keeps every wallet's exact balance."""
