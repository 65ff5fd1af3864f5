"""workflows: Run the automations a team defined."""
