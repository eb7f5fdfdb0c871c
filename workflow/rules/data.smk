# Data stage: download (cifar10 only), then one canonical uint8 zarr store.


rule download_cifar10:
    output:
        archive=f"{RESOURCES}/downloads/cifar-10-binary.tar.gz",
    log:
        f"{LOGS}/download_cifar10.log",
    conda:
        ENVIRONMENT
    resources:
        mem_mb=1000,
        runtime=60,
    params:
        url=config["data"]["cifar10"]["url"],
        md5=config["data"]["cifar10"]["md5"] or "",
    shell:
        "python -m dnndist download-cifar10 --url {params.url:q} --md5 {params.md5:q} "
        "--out {output.archive:q} > {log:q} 2>&1"


rule dataset:
    input:
        unpack(dataset_inputs),
    output:
        store=directory(DATASET_STORE),
    log:
        f"{LOGS}/dataset.log",
    conda:
        ENVIRONMENT
    # an image folder's images are decoded by one process per thread; the store's bytes do not
    # depend on the number. 2 by default, like every job (a cluster node must offer what a job
    # asks for); on a bigger machine: --set-threads dataset=16
    threads: 2
    resources:
        mem_mb=4000,
        runtime=120,
    params:
        settings=data_settings_json,
        archive=archive_arg,
    shell:
        "python -m dnndist data --settings {params.settings:q} {params.archive} "
        "--out {output.store:q} --workers {threads} > {log:q} 2>&1"
