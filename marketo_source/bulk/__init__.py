"""Reading a stream's history through Marketo's Bulk Activity Extract, beside REST paging.

Bulk exports spend an export quota (bytes of files a day) instead of API calls: the jobs, the
export budget, the download and checking of their files, and the parsing of a file into the same
typed tables REST paging fills.
"""
