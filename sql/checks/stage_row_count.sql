SELECT count(*) FROM {table} WHERE stage = $stage AND config_hash = $config_hash;
