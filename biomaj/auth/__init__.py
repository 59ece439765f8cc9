"""Users, passwords, API keys and LDAP."""
