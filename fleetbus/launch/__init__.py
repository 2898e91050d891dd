"""Node graphs: YAML graph files, validation, launching and supervision."""
