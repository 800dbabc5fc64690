"""The operator's settings: its config file and the policies it carries (egress, message templates). Pure."""
