"""Ready-made workflows from the CRM playbooks, installed as normal, editable workflows."""
