"""CA plugins (Pilot plugin kind ``pilot_register_cas``)."""
