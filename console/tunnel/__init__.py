"""The unit side: asyncssh client workers that keep reverse tunnels up, key install, host-key checks."""
