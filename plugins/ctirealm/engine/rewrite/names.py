"""Kusto's function names: what the engine may call "not a Kusto function".

An error for a name Kusto does not have is a semantic error (a typo); for a
Kusto function the engine lacks it is an unsupported construct. This module
holds the list that tells them apart, and Kusto's deprecated spellings with
the names they stand for. Pure data: nothing here changes duckdb-kql.
"""

from __future__ import annotations

#: Kusto's built-in scalar, aggregate and window functions (public docs), so an
#: error can tell "not a Kusto function" (a typo: semantic error) from "a Kusto
#: function this engine does not implement" (unsupported).
KUSTO_FUNCTIONS: frozenset[str] = frozenset(
    """
abs acos ago any anyif arg_max arg_min argmax argmin array_concat array_iff array_iif
array_index_of array_length array_reverse array_rotate_left array_rotate_right
array_shift_left array_shift_right array_slice array_sort_asc array_sort_desc array_split
array_sum asin assert atan atan2 avg avgif bag_has_key bag_keys bag_merge bag_pack
bag_pack_columns bag_remove_keys bag_set_key base64_decode_toarray base64_decode_toguid
base64_decode_tostring base64_decodestring base64_encode_fromarray base64_encode_fromguid
base64_encode_tostring base64_encodestring beta_cdf beta_inv beta_pdf bin bin_at bin_auto
binary_all_and binary_all_or binary_all_xor binary_and binary_not binary_or
binary_shift_left binary_shift_right binary_xor bitset_count_ones buildschema case ceiling
coalesce column_ifexists convert_angle convert_energy convert_force convert_length
convert_mass convert_speed convert_temperature convert_volume cos cot count count_distinct
count_distinctif countif countof current_cluster_endpoint current_database
current_principal current_principal_details current_principal_is_member_of cursor_after
cursor_before_or_at cursor_current datetime_add datetime_diff datetime_list_timezones
datetime_local_to_utc datetime_part datetime_utc_to_local dayofmonth dayofweek dayofyear
dcount dcount_hll dcountif degrees dynamic_to_json endofday endofmonth endofweek endofyear
erf erfc estimate_data_size exp exp10 exp2 extent_id extent_tags_ingestion_time extract
extract_all extract_json extractall extractjson format_bytes format_datetime format_ipv4
format_ipv4_mask format_timespan gamma geo_info_from_ip_address getmonth gettype getyear
has_any_index has_ipv4 has_ipv4_prefix hash hash_combine hash_many hash_md5 hash_sha1
hash_sha256 hash_xxhash64 hll hll_if hll_merge hourofday iff iif indexof indexof_regex
ingestion_time ipv4_compare ipv4_is_in_any_range ipv4_is_in_range ipv4_is_match
ipv4_is_private ipv4_netmask_suffix ipv6_compare ipv6_is_in_any_range ipv6_is_in_range
ipv6_is_match isascii isempty isfinite isinf isnan isnotempty isnotnull isnull isutf8
jaccard_index log log10 log2 loggamma make_bag make_bag_if make_datetime make_list
make_list_if make_list_with_nulls make_set make_set_if make_string make_timespan max
max_of maxif merge_tdigest min min_of minif monthofyear new_guid next not notempty now
notnull pack pack_all pack_array pack_dictionary parse_command_line parse_csv parse_ipv4
parse_ipv4_mask parse_ipv6 parse_ipv6_mask parse_json parse_path parse_url
parse_urlquery parse_user_agent parse_version parse_xml percentile percentile_array_tdigest
percentile_tdigest percentiles percentiles_array percentilew percentilesw
percentrank_tdigest pi pow prev radians rand range rank_tdigest regex_quote repeat replace
replace_regex replace_string replace_strings reverse round row_cumsum row_number
row_rank_dense row_rank_min row_rank_minmax row_window_session series_abs series_acos
series_add series_asin series_atan series_cos series_decompose series_decompose_anomalies
series_decompose_forecast series_divide series_equals series_exp series_fft series_fill_backward
series_fill_const series_fill_forward series_fill_linear series_fir series_fit_2lines
series_fit_2lines_dynamic series_fit_line series_fit_line_dynamic series_fit_poly
series_greater series_greater_equals series_ifft series_iir series_less series_less_equals
series_log series_magnitude series_multiply series_not_equals series_outliers
series_pearson_correlation series_periods_detect series_periods_validate series_pow
series_seasonal series_sign series_sin series_stats series_stats_dynamic series_subtract
series_sum series_tan set_difference set_has_element set_intersect set_union sign sin
split sqrt startofday startofmonth startofweek startofyear stdev stdevif stdevp strcat
strcat_array strcat_delim strcmp string_size strlen strrep substring sum sumif take_any
take_anyif tan tdigest tdigest_merge tobool toboolean todatetime todecimal todouble
todynamic toguid tohex toint tolong tolower toobject toreal toscalar tostring totimespan
toupper translate treepath trim trim_end trim_start unicode_codepoints_from_string
unicode_codepoints_to_string unixtime_microseconds_todatetime
unixtime_milliseconds_todatetime unixtime_nanoseconds_todatetime
unixtime_seconds_todatetime url_decode url_encode url_encode_component variance
varianceif variancep week_of_year weekofyear welch_test zip zlib_compress_to_base64_string
zlib_decompress_from_base64_string
bag_zip dcount_intersect extent_tags floor has_any_ipv4 has_any_ipv4_prefix
ipv4_range_to_cidr_list materialize percentilesw_array punycode_domain_from_string
punycode_domain_to_string punycode_from_string punycode_to_string series_ceiling
series_cosine_similarity series_dot_product series_floor series_product to_utf8
geo_angle geo_azimuth geo_closest_point_on_line geo_closest_point_on_polygon
geo_distance_2points geo_distance_point_to_line geo_distance_point_to_polygon
geo_geohash_neighbors geo_geohash_to_central_point geo_geohash_to_polygon
geo_h3cell_children geo_h3cell_level geo_h3cell_neighbors geo_h3cell_parent
geo_h3cell_rings geo_h3cell_to_central_point geo_h3cell_to_polygon geo_intersection_2lines
geo_intersection_2polygons geo_intersection_line_with_polygon geo_intersects_2lines
geo_intersects_2polygons geo_intersects_line_with_polygon geo_line_buffer geo_line_centroid
geo_line_densify geo_line_interpolate_point geo_line_length geo_line_locate_point
geo_line_simplify geo_line_to_s2cells geo_point_buffer geo_point_in_circle
geo_point_in_polygon geo_point_to_geohash geo_point_to_h3cell geo_point_to_s2cell
geo_polygon_area geo_polygon_buffer geo_polygon_centroid geo_polygon_densify
geo_polygon_perimeter geo_polygon_simplify geo_polygon_to_h3cells geo_polygon_to_s2cells
geo_s2cell_neighbors geo_s2cell_to_central_point geo_s2cell_to_polygon
geo_simplify_polygons_array geo_union_lines_array geo_union_polygons_array
""".split()
)

#: Deprecated spellings Kusto still accepts -> the function each stands for (the
#: "Deprecated aliases" of Kusto's function reference). The engine treats a
#: deprecated call exactly as a call of its replacement, default column names
#: included (``makeset(x)`` is ``set_x``, as ``make_set(x)`` is).
DEPRECATED_ALIASES: dict[str, str] = {
    "makeset": "make_set",
    "makelist": "make_list",
    "argmax": "arg_max",
    "argmin": "arg_min",
    "any": "take_any",
    "anyif": "take_anyif",
    "make_dictionary": "make_bag",
    "columnifexists": "column_ifexists",
    "parseurl": "parse_url",
    "parseurlquery": "parse_urlquery",
    "parsejson": "parse_json",
    "toobject": "todynamic",
    "extractall": "extract_all",
    "extractjson": "extract_json",
    "base64_encodestring": "base64_encode_tostring",
    "base64_decodestring": "base64_decode_tostring",
    "datepart": "datetime_part",
    "weekofyear": "week_of_year",
    "array_iif": "array_iff",
    "toboolean": "tobool",
    "toreal": "todouble",
    "iif": "iff",
    "pack": "bag_pack",
    # Not in the reference pages, but Kusto accepts it and Azure Monitor's own
    # example queries use it.
    "array_strcat": "strcat_array",
}

KUSTO_FUNCTIONS = KUSTO_FUNCTIONS | frozenset(DEPRECATED_ALIASES)


def is_kusto_function(name: str) -> bool:
    """Whether *name* is one of Kusto's built-in functions (case-insensitive)."""
    return name.lower() in KUSTO_FUNCTIONS
